//! Macros the crate's services share.

/// `get_ref`, `get_mut` and `into_inner` for a service whose inner service is the field at
/// the given path (`inner`, `core.inner`), as tower-http writes them once.
macro_rules! define_inner_service_accessors {
    ($($field:ident).+) => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.$($field).+
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.$($field).+
        }

        /// Takes the inner service out.
        pub fn into_inner(self) -> S {
            self.$($field).+
        }
    };
}
