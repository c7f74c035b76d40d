mod crash;
mod end_to_end;
mod failures;
