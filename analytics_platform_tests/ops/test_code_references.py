"""Issue 17.6: every asset the code location computes carries code references (its file and
line); with CODE_REFERENCES_GIT_URL they link to the repository at CODE_REFERENCES_GIT_REF."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from analytics_platform import definitions as D

REPO = Path(__file__).resolve().parents[2]


def _references(defs_assets) -> dict[str, object]:
    out = {}
    for a in defs_assets:
        if isinstance(a, dg.AssetsDefinition) and a.is_executable:
            for key, spec in zip(a.keys, a.specs):
                out[key.to_user_string()] = spec.metadata.get("dagster/code_references")
    return out


def _executable_count() -> int:
    return sum(len(a.keys) for a in D.defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable)


def test_every_computed_asset_points_at_its_definition_locally():
    refs = _references(D.defs.assets)
    assert len(refs) == _executable_count() >= 10
    for key, meta in refs.items():
        assert meta is not None, key
        (ref,) = meta.code_references
        lines = Path(ref.file_path).read_text().splitlines()
        # the decorated function's def (or its decorator) is at that line
        assert "def " in lines[ref.line_number - 1] or "@" in lines[ref.line_number - 1], (key, ref)


def test_with_a_git_url_references_link_to_the_repository():
    url, ref = "https://github.com/acme/analytics-platform", "0123abc"
    linked = D.with_code_references(list(D.merged_definitions().assets or []), url, ref)
    refs = _references(linked)
    assert refs and all(meta is not None for meta in refs.values())
    for key, meta in refs.items():
        (code_ref,) = meta.code_references
        assert isinstance(code_ref, dg.UrlCodeReference), (key, code_ref)
        prefix = f"{url}/tree/{ref}/"
        assert code_ref.url.startswith(prefix), code_ref.url
        path, line = code_ref.url[len(prefix):].split("#L")
        assert path.startswith("analytics_platform/") and (REPO / path).is_file(), path
        assert int(line) >= 1
    events = refs["mixpanel_data/mixpanel_events"].code_references[0].url
    assert "/analytics_platform/mixpanel/assets.py#L" in events
