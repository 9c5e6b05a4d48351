#!/usr/bin/env bash
# The whole test suite, with every optional encoder (cargo features mp3 and opus). On a fresh
# Debian machine it first installs what the build and the black-box tests use: cmake (libopus),
# sipp (package sip-tester) as an SRC we did not write, tshark for captures, kamailio as the
# dispatcher in front of two gateways (tests/scale_out.rs), and independent decoders and
# SRTP peers to read our output back: sox, ffmpeg, opusdec (opus-tools).
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
# The mp3 and opus features compile LAME and libopus: a C compiler, and make for CMake.
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v sox >/dev/null 2>&1 || missing+=(sox)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v opusdec >/dev/null 2>&1 || missing+=(opus-tools)
# The black-box tests signal the gateway with /bin/kill (SIGTERM, SIGHUP, SIGKILL).
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || missing+=(procps)
# Debian puts kamailio in /usr/sbin, outside a normal user's PATH.
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || missing+=(kamailio)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo test --locked --all-features "$@"
