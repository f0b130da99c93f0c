# Sourced by the bench scripts.

# The ferry-controller binary to measure, on stdout: $FERRY_CONTROLLER_BIN
# when set (to compare two builds: checkouts that share a target directory
# also share its release/ path), else this checkout's release build, built
# first. Needs $root and $CARGO_TARGET_DIR.
controller_bin() {
  if [ -n "${FERRY_CONTROLLER_BIN:-}" ]; then
    echo "$FERRY_CONTROLLER_BIN"
    return
  fi
  (cd "$root" && cargo build --release --locked -q -p ferry-controller) >&2
  echo "$CARGO_TARGET_DIR/release/ferry-controller"
}
