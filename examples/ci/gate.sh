#!/usr/bin/env bash
# The gate step of memorization-gate.yml: the pull request's manifest, under the base branch's policy.
#   gate.sh PR_DIR BASE_DIR [more pytest arguments]
# PR_DIR is the pull request's checkout (data only), BASE_DIR the base branch's; this script, the
# policy, the ini file and the waivers come from BASE_DIR/.github/memorization/.
set -euo pipefail
pr=$(cd "$1" && pwd)
base=$(cd "$2" && pwd)
shift 2
here="$base/.github/memorization"
python=${PYTHON:-python}
report=${MEMORIZATION_REPORT_DIR:-$PWD/memorization-report}
cache=${MEMORIZATION_CACHE_DIR:-$PWD/.memorization_cache}
cd "$pr"
# -c: the base's ini, not the pull request's pytest.ini/pyproject.toml (addopts, plugins, ini keys);
# --noconftest: no conftest.py of the pull request runs; only the manifest is collected.
exec "$python" -m pytest -c "$here/pytest.ini" --rootdir "$pr" --noconftest -p no:cacheprovider \
  --memorization --memorization-required \
  --memorization-policy="$here/policy.toml" \
  --memorization-report="$report" --memorization-cache-dir="$cache" \
  "$@" "$pr/memorization.toml"
