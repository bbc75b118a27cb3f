//! Users and the keys they create at runtime (SPEC §9, docs/api.md "User
//! API", "Admin API", "Sessions"): who is signed in ([`signed_in_user`]),
//! console sessions, and managed keys.
//!
//! A request of the user API names its user by `Authorization: Bearer
//! <user token>` (a `[[users]] token_sha256`) or by the session cookie
//! that `POST /api/session` hands out; the admin API takes the admin token
//! or the admin session cookie the same way.

mod admin_api;
mod fields;
mod key_api;
pub mod registry;
mod service;
mod session;
mod user_api;

pub use admin_api::{admin_api, AdminAccess};
pub use service::{Answer, KeyService, ADMIN_COOKIE, USER_COOKIE};
pub use session::{cross_site, fresh_secret, json_required};
pub use user_api::{is_user_api, user_api};
