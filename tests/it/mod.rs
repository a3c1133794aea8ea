mod codes;
mod no_panic;
mod schema;
mod support;
mod sweeps;
mod validate;
