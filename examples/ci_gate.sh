#!/bin/sh
# redaudit CI gate (docs/ci.md): on a pull request, scan the model, gate it against the
# baseline recorded from the main branch, and post the verdict as a Markdown comment; on a push
# to the main branch, record the scan as the new baseline.
#
# Exit status: 0 pass (or baseline recorded), 1 the gate failed (comment posted), 2 a usage or
# input error (nothing posted; the reason is the last line on stderr).
#
# Environment:
#   REDAUDIT_MODEL         the ONNX model to scan (required)
#   REDAUDIT_NAME          its name in the history (required)
#   REDAUDIT_DB            history database: SQLite path or postgresql:// URL (default: redaudit's)
#   REDAUDIT_EVENT         pull_request (gate, the default) or push (record the baseline)
#   REDAUDIT_MAX_INCREASE  allowed MSRS increase over the baseline, in percent (default 10)
#   REDAUDIT_MAX_MSRS      also fail above this MSRS (optional)
#   REDAUDIT_LABEL         label of the recorded version on push (e.g. the commit sha; optional)
#   REDAUDIT_INPUTS        .npz of real probe inputs (optional; synthetic inputs otherwise)
#   REDAUDIT_SCAN_ARGS     more scan options, word-split (e.g. "--samples 2560 --level block")
#   REDAUDIT_OUT           folder for comment.md and report.html (default redaudit-out)
#   REDAUDIT_REPORT_URL    where report.html will be served (e.g. the CI artifact); the comment links it
#   REDAUDIT_POST          shell command that reads the comment on stdin and posts it
#                          (e.g. 'gh pr comment "$PR" --body-file -'); default: print it
#   REDAUDIT               the redaudit command (default: redaudit)
set -u

if [ -z "${REDAUDIT_MODEL:-}" ] || [ -z "${REDAUDIT_NAME:-}" ]; then
  echo "error: set REDAUDIT_MODEL (the ONNX model) and REDAUDIT_NAME (its name in the history)" >&2
  exit 2
fi
redaudit="${REDAUDIT:-redaudit}"
out="${REDAUDIT_OUT:-redaudit-out}"
mkdir -p "$out" || exit 2

set -- --quiet
[ -n "${REDAUDIT_DB:-}" ] && set -- "$@" --db "$REDAUDIT_DB"
[ -n "${REDAUDIT_INPUTS:-}" ] && set -- "$@" --inputs "$REDAUDIT_INPUTS"
# shellcheck disable=SC2086 # word splitting of the extra options is intended
set -- "$@" ${REDAUDIT_SCAN_ARGS:-}

case "${REDAUDIT_EVENT:-pull_request}" in
  push)
    [ -n "${REDAUDIT_LABEL:-}" ] && set -- "$@" --label "$REDAUDIT_LABEL"
    exec "$redaudit" scan "$REDAUDIT_MODEL" --record "$REDAUDIT_NAME" "$@"
    ;;
  pull_request) ;;
  *) echo "error: REDAUDIT_EVENT must be pull_request or push, not '$REDAUDIT_EVENT'" >&2; exit 2 ;;
esac

set -- "$@" --against "$REDAUDIT_NAME" --max-increase "${REDAUDIT_MAX_INCREASE:-10}" --significant
[ -n "${REDAUDIT_MAX_MSRS:-}" ] && set -- "$@" --max-msrs "$REDAUDIT_MAX_MSRS"
[ -n "${REDAUDIT_REPORT_URL:-}" ] && set -- "$@" --report-url "$REDAUDIT_REPORT_URL"
"$redaudit" check "$REDAUDIT_MODEL" "$@" --format md --html "$out/report.html" > "$out/comment.md"
status=$?
if [ "$status" -ge 2 ]; then
  exit "$status"  # the check could not run: its one-line reason is on stderr, nothing to post
fi
if [ -n "${REDAUDIT_POST:-}" ]; then
  sh -c "$REDAUDIT_POST" < "$out/comment.md" || { echo "error: posting the comment failed" >&2; exit 2; }
else
  cat "$out/comment.md"
fi
exit "$status"
