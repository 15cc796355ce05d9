#!/usr/bin/env bash
# Runs the HTTP cache test suite (npm `http-cache-tests`, the suite behind cache-tests.fyi) against a
# caching proxy and summarizes the results as cache-tests.fyi scores them.
#
#   run.sh <name> <base-url> [results.json]   a proxy already listening at <base-url> that forwards
#                                             to the suite's server on 127.0.0.1:$ORIGIN_PORT
#   run.sh --start-nginx [results.json]       nginx proxy_cache from nginx.conf.template
#   run.sh --start-varnish [results.json]     Varnish with the built-in VCL from varnish.vcl.template
#   run.sh --published [name=results.json ...] the published results the package ships, and the
#                                             given runs, scored alike, one line each
#   run.sh --test <test-id> <base-url>        one test, with the requests and responses the client
#                                             and the suite's server saw (to debug a failure)
#
# For caching_proxy:
#   cargo run --release -p proxflow-examples --bin caching_proxy -- --upstream http://127.0.0.1:8000 --listen 127.0.0.1:8080 &
#   benches/cache_conformance/run.sh caching_proxy http://127.0.0.1:8080
#
# The suite's server is started on 127.0.0.1:$ORIGIN_PORT (default 8000) unless it already runs
# there; the proxy must forward to it. The raw results (the suite CLI's JSON: test id -> true or
# [error kind, message]) go to the given path, or to a new file under $TMPDIR that is printed.
# Everything the script starts (the suite's server, nginx, varnishd) is stopped when it exits,
# Ctrl-C included. It runs as a normal user; as root, nginx's workers run as nobody.
#
# Environment:
#   CACHE_TESTS_DIR  where the suite is installed (default ~/.cache/proxflow/http-cache-tests-<version>);
#                    it is installed from npm on first use
#   ORIGIN_PORT      the suite server's port (default 8000)
#   NGINX, VARNISHD  the binaries (default: found on PATH or in /usr/sbin)
#   VARNISH_PARAMS   varnishd's runtime parameters (default: the published run's, see below)
#   CACHE_TESTS_CONCURRENCY  tests run at a time (default: the suite's 100); a lower number tells
#                    failures under load from failures of semantics, and takes longer
#
# Needs node and npm (Debian: nodejs npm), curl, and nginx or varnish for their modes.
# NOTES.md has the counts measured with it and the commands that gave them.
set -euo pipefail

# The suite's version is pinned, so that counts are comparable between runs.
SUITE_VERSION=0.4.5
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUITE_DIR=${CACHE_TESTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/proxflow/http-cache-tests-$SUITE_VERSION}
PKG=$SUITE_DIR/node_modules/http-cache-tests
ORIGIN_PORT=${ORIGIN_PORT:-8000}
# The published Varnish run's parameters (the package's docker/serve.sh): no default TTL, so that
# responses without freshness information are not stored (the suite's FAQ: such "default caching"
# fails many tests through their dependencies), no grace, and stale objects kept for an hour so that
# they can be revalidated. VARNISH_PARAMS="" runs Debian's stock parameters instead.
VARNISH_PARAMS=${VARNISH_PARAMS-"-p default_ttl=0 -p default_grace=0 -p default_keep=3600"}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cache-conformance.XXXXXX")
PIDS=()

# Stops what this script started, newest first, and waits for each, then removes the temporary files.
cleanup() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
# An interrupt ends the script through exit, so that the EXIT trap runs once.
trap 'exit 130' INT TERM HUP

log() { echo "run.sh: $*" >&2; }
die() { log "$*"; exit 1; }

find_bin() { # name, override
  if [[ -n $2 ]]; then echo "$2"; return; fi
  command -v "$1" 2>/dev/null || { [[ -x /usr/sbin/$1 ]] && echo "/usr/sbin/$1"; } || die "$1 not found (apt-get install $3)"
}

# Waits up to 10 s until `curl` answers (any HTTP status) at $1, while process $2 lives.
wait_http() {
  local i
  for ((i = 0; i < 100; i++)); do
    if [[ $(curl -s -o /dev/null -w '%{http_code}' "$1" || true) != 000 ]]; then return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })'
}

ensure_suite() {
  command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed (apt-get install nodejs npm)"
  command -v curl >/dev/null || die "curl is needed"
  if [[ ! -f $PKG/package.json ]]; then
    log "installing http-cache-tests@$SUITE_VERSION into $SUITE_DIR"
    mkdir -p "$SUITE_DIR"
    # A package.json of its own, so that npm installs here and not into a project found above.
    [[ -f $SUITE_DIR/package.json ]] || echo '{ "private": true }' >"$SUITE_DIR/package.json"
    # The suite's README installs it with --legacy-bundling (nested node_modules).
    (cd "$SUITE_DIR" && npm install --no-audit --no-fund --loglevel=error --legacy-bundling \
      "http-cache-tests@$SUITE_VERSION" >&2)
  fi
  local have
  have=$(node -p "require('$PKG/package.json').version")
  [[ $have == "$SUITE_VERSION" ]] || die "$PKG is version $have, not $SUITE_VERSION: set CACHE_TESTS_DIR elsewhere"
}

# Starts the suite's server unless it already answers on ORIGIN_PORT.
ensure_origin() {
  local url=http://127.0.0.1:$ORIGIN_PORT
  # The server serves its package's files, so its package.json tells it from anything else.
  if curl -sf "$url/package.json" 2>/dev/null | grep -q '"name": "http-cache-tests"'; then
    log "using the suite's server already on $url"
    return
  fi
  # `npm run server` is `node server/server.mjs &` with these settings from npm's config; run
  # without npm's `&`, the server stays this script's child and is stopped with it. It listens on
  # every address (server.mjs gives listen() no host).
  (cd "$PKG" && exec env npm_config_protocol=http npm_config_port="$ORIGIN_PORT" \
    npm_config_pidfile="$WORK/server.pid" node server/server.mjs) >"$WORK/server.log" 2>&1 &
  PIDS+=($!)
  wait_http "$url/" $! || { cat "$WORK/server.log" >&2; die "the suite's server did not start on port $ORIGIN_PORT"; }
  log "started the suite's server on $url"
}

# Runs the suite against $2 and summarizes it under the name $1; the results go to $3 or a temp file.
run_suite() {
  local name=$1 base=${2%/} out=${3:-}
  if [[ -z $out ]]; then out=$(mktemp "${TMPDIR:-/tmp}/cache-tests-${name//[^A-Za-z0-9_.-]/_}.XXXXXX.json"); fi
  log "running http-cache-tests $SUITE_VERSION against $base ($name); about 20 s"
  local cli=(npm run --silent cli --base="$base")
  if [[ -n ${CACHE_TESTS_CONCURRENCY:-} ]]; then
    # cli.mjs without its fixed 100 tests at a time (runner.mjs's chunkSize), to tell load from
    # semantics; the published results are all at 100.
    cli=(node --no-warnings "$HERE/cli_concurrency.mjs" "$base" "$CACHE_TESTS_CONCURRENCY")
    log "$CACHE_TESTS_CONCURRENCY tests at a time (the suite's own CLI runs 100)"
  fi
  # The suite's CLI as its README runs it; it prints the results as JSON.
  if ! (cd "$PKG" && "${cli[@]}") >"$out" 2>"$WORK/cli.err" ||
    ! node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$out" 2>/dev/null; then
    cat "$WORK/cli.err" >&2
    die "the suite's CLI failed; its output is in $out"
  fi
  echo "suite: http-cache-tests $SUITE_VERSION; results: $out"
  node "$HERE/summarize.mjs" "$PKG" "$name" "$out"
  echo
  node "$HERE/summarize.mjs" "$PKG" --published "$name=$out"
}

start_nginx() {
  local nginx port prefix=$WORK/nginx user_line=
  nginx=$(find_bin nginx "${NGINX:-}" nginx)
  port=$(free_port)
  mkdir -p "$prefix"
  if [[ $EUID -eq 0 ]]; then
    # As root nginx's workers switch user; they must reach the cache inside the prefix.
    user_line="user nobody $(id -gn nobody);"
    chmod 755 "$WORK" "$prefix"
  fi
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@PORT@|$port|g" -e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g" \
    -e "s|@USER_LINE@|$user_line|" "$HERE/nginx.conf.template" >"$prefix/nginx.conf"
  # -e: the error log before the configuration is read is in the prefix too, not /var/log/nginx.
  "$nginx" -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/error.log" &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/" $! || { cat "$prefix/error.log" >&2; die "nginx did not start"; }
  log "started $("$nginx" -v 2>&1) on 127.0.0.1:$port"
  BASE=http://127.0.0.1:$port
}

start_varnish() {
  local varnishd port dir=$WORK/varnish jail=()
  varnishd=$(find_bin varnishd "${VARNISHD:-}" varnish)
  port=$(free_port)
  mkdir -p "$dir"
  sed -e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g" "$HERE/varnish.vcl.template" >"$dir/suite.vcl"
  if [[ $EUID -eq 0 ]]; then
    # As root varnishd's default jail switches to the varnish user, which must read the VCL.
    chmod 755 "$WORK" "$dir"
  else
    # A normal user cannot switch users: no jail.
    jail=(-j none)
  fi
  # -F: in the foreground, as this script's child. -n: the working directory (shared memory log,
  # compiled VCL) in the temporary directory. -T none: no management port is needed.
  # -s malloc,64M: in memory, as in the published run.
  # shellcheck disable=SC2086 # VARNISH_PARAMS is a list of arguments
  "$varnishd" -F -n "$dir/work" -a "127.0.0.1:$port" -f "$dir/suite.vcl" -T none -s malloc,64M \
    "${jail[@]}" $VARNISH_PARAMS >"$dir/varnishd.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/" $! || { cat "$dir/varnishd.log" >&2; die "varnishd did not start"; }
  log "started $("$varnishd" -V 2>&1 | head -1) on 127.0.0.1:$port, parameters: ${VARNISH_PARAMS:-stock}"
  BASE=http://127.0.0.1:$port
}

[[ $# -ge 1 ]] || usage
case $1 in
  -h | --help) usage ;;
  --published)
    shift
    ensure_suite
    node "$HERE/summarize.mjs" "$PKG" --published "$@"
    ;;
  --test)
    [[ $# -eq 3 ]] || usage
    ensure_suite
    ensure_origin
    # The suite's CLI with --id prints each exchange and the verdict instead of JSON.
    (cd "$PKG" && npm run --silent cli --base="${3%/}" --id="$2")
    ;;
  --start-nginx)
    ensure_suite
    ensure_origin
    start_nginx
    run_suite nginx "$BASE" "${2:-}"
    ;;
  --start-varnish)
    ensure_suite
    ensure_origin
    start_varnish
    run_suite varnish "$BASE" "${2:-}"
    ;;
  -*) usage ;;
  *)
    [[ $# -ge 2 ]] || usage
    ensure_suite
    ensure_origin
    run_suite "$1" "$2" "${3:-}"
    ;;
esac
