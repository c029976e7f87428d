#!/usr/bin/env bash
# Install the built wheel (no deps) into a scratch target and import the registry / hub cards from it.
set -euo pipefail
PY=$(cd "$(dirname "$1")" && pwd)/$(basename "$1"); DIST=$(cd "$2" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip install --quiet --no-deps --target "$tmp/site" "$DIST"/*.whl
cd "$tmp"
PYTHONPATH="$tmp/site" "$PY" - <<'PYEOF'
import timm_nas, timm_nas.registry as r, timm_nas._resources as res
from pathlib import Path
site = Path.cwd() / "site"
assert Path(timm_nas.__file__).resolve().is_relative_to(site.resolve()), timm_nas.__file__
reg = res.data_dir("registry"); cards = res.data_dir("hub_cards")
assert reg.resolve().is_relative_to(site.resolve()) and cards.resolve().is_relative_to(site.resolve()), (reg, cards)
fams = r.families()
assert fams, "no registry files in the wheel"
for fam in fams:
    assert r.load_registry(fam), fam
# render a model card from the wheel's templates (architecture-only export of a meta-device model)
import timm_nas.hub as hub
out = hub.export(timm_nas.create_model("autoformer_subnet", device="meta"), Path.cwd() / "card_check")
card = (out / "README.md").read_text()
assert "import timm_nas" in card and "AutoFormer: Searching Transformers" in card, card[:400]  # the family template
assert "{{" not in card and "{%" not in card, "unrendered Jinja2 in the card"
print(f"wheel ok: timm_nas from {timm_nas.__file__}; registry families {fams}; cards {sorted(p.name for p in cards.iterdir())}")
PYEOF
