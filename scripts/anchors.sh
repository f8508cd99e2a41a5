# Sourced by the side-by-side benchmark scripts: sets ANCHORS (the folder of shared/anchors that
# holds the script named by $1, unless ANCHORS is set already) and PY (the BrainPy venv's python,
# ANCHOR_VENV or ~/.cache/brainpy-anchor, made by shared/anchors/setup.sh).
if [ -z "${ANCHORS:-}" ]; then
  for d in ../shared/anchors ../../shared/anchors /work/shared/anchors; do
    if [ -f "$d/$1" ]; then ANCHORS="$d"; break; fi
  done
fi
if [ -z "${ANCHORS:-}" ]; then
  echo "shared/anchors/$1 not found (set ANCHORS to its folder)" >&2
  return 1
fi
PY="${ANCHOR_VENV:-$HOME/.cache/brainpy-anchor}/bin/python"
