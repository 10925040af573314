#!/usr/bin/env bash
# The main job: train the digits classifier with TrtExport on TF 2.17 and write a full export.
# Extra arguments go to examples/train_keras.py (e.g. --epochs=3 --export_dir=/tmp/digits).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$("$here/scripts/make_env.sh" 2.17 | tail -n 1)"
cd "$here"
exec "$python" examples/train_keras.py "$@"
