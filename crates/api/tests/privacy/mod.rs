mod corpus;
mod end_to_end;
pub mod harness;
mod opendsr;
