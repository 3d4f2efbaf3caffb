#!/bin/sh
# The morning after a nightly sweep (see grid5000/README.md, "Nightly runs with cron"): wait for the last
# night's campaign, collect it, compare it with the night before. Run from the repository's root.
#   NIGHTLY=$HOME/bt-nightly CAMPAIGN=grele-mobilenet sh grid5000/examples/morning.sh
set -u
NIGHTLY="${NIGHTLY:-$HOME/bt-nightly}"
CAMPAIGN="${CAMPAIGN:-grele-mobilenet}"
BT=.venv/bin/benchmark-tracker
last="$(ls -d "$NIGHTLY"/*/"$CAMPAIGN" 2>/dev/null | sort | tail -1)"
previous="$(ls -d "$NIGHTLY"/*/"$CAMPAIGN" 2>/dev/null | sort | tail -2 | head -1)"
[ -n "$last" ] || { echo "no campaign $CAMPAIGN under $NIGHTLY"; exit 2; }
echo "$(date -u +%FT%TZ) morning: $last"
$BT wait "$last" --poll 60 --timeout 3600; waited=$?     # 0 all done, 1 some failed, 3 still running
$BT status -v "$last"
$BT collect "$last" || exit 2
if [ "$previous" != "$last" ]; then
    $BT compare "$previous" "$last" --markdown "$last/compare.md"
fi
exit $waited
