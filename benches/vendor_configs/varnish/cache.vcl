vcl 4.1;

# Only the origin: the built-in VCL does the rest (a GET without cookies is looked up; the
# origin's max-age sets the TTL). Storage and threads are varnishd's parameters (see
# `VARNISH_PARAMS` in benches/src/compare/cache.rs).
backend origin {
    .host = "127.0.0.1";
    .port = "{{origin}}";
}
