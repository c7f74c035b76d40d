mod auth;
mod endpoints;
mod spec;
mod validation;
