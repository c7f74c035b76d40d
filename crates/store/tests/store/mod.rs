mod audit;
mod keys_corpus;
mod purge;
mod queue;
mod registry;
mod requests;
