//! The one integration test binary: drives the real `xp` binary and the library on fixtures.

mod it;
