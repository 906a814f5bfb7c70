"""The acceptance table of issue 16, rendered from a `ReplaySummary` (pure text, no I/O)."""

from __future__ import annotations

from verifiers.trim_replay import ReplaySummary, ReplayTotals

__all__ = ["TARGET_FAMILY_PT", "TARGET_POOLED_PT", "TARGET_SAVED_PCT", "markdown", "verdict"]

TARGET_SAVED_PCT = 25.0  # pooled thinking tokens saved, at least
TARGET_POOLED_PT = -0.5  # pooled accuracy change, at least
TARGET_FAMILY_PT = -1.5  # accuracy change of every family of >= 50 traces, at least
FAMILY_MIN_TRACES = 50


def verdict(summary: ReplaySummary) -> tuple[bool, list[str]]:
    """Whether the acceptance target holds, and each failed clause."""
    failed: list[str] = []
    pooled = summary.pooled
    if pooled.saved_pct < TARGET_SAVED_PCT:
        failed.append(f"pooled saving {pooled.saved_pct:.1f}% < {TARGET_SAVED_PCT:g}%")
    if pooled.accuracy_change_pt < TARGET_POOLED_PT:
        failed.append(f"pooled accuracy {pooled.accuracy_change_pt:+.1f} pt < {TARGET_POOLED_PT}")
    for kind, rows in (("family", summary.families), ("group", summary.groups)):
        for name, row in rows.items():
            if row.traces >= FAMILY_MIN_TRACES and row.accuracy_change_pt < TARGET_FAMILY_PT:
                failed.append(f"{kind} {name}: {row.accuracy_change_pt:+.1f} pt")
    return not failed, failed


def _line(name: str, row: ReplayTotals) -> str:
    rules = ", ".join(f"{k} {v.trims}" for k, v in row.per_rule.items() if v.trims)
    oracle = "" if row.oracle_saved_pct is None else f"{row.oracle_saved_pct:.1f}%"
    return (
        f"| {name} | {row.traces} | {row.thinking_tokens_before} | {row.thinking_tokens_after} | "
        f"**{row.saved_pct:.1f}%** | {oracle} | {row.accuracy_before:.1f}% | "
        f"{row.accuracy_after:.1f}% | **{row.accuracy_change_pt:+.1f}** | {row.lost} | "
        f"{row.gained} | {rules or '-'} |"
    )


def markdown(summary: ReplaySummary, *, heldout: ReplaySummary | None = None) -> str:
    header = (
        "| traces | n | thinking tokens before | after | saved | oracle bound | accuracy before "
        "| after | change (pt) | lost | gained | trims by rule |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    lines = [header, _line("**pooled**", summary.pooled)]
    lines += [_line(f"family `{k}`", v) for k, v in summary.families.items()]
    lines += [_line(k, v) for k, v in summary.groups.items()]
    if heldout is not None:
        lines.append(_line("**pooled, held-out half**", heldout.pooled))
        lines += [_line(f"held-out, family `{k}`", v) for k, v in heldout.families.items()]
    ok, failed = verdict(summary)
    target = (
        f"Target (≥ {TARGET_SAVED_PCT:g}% fewer thinking tokens pooled at ≥ {TARGET_POOLED_PT} pt, "
        f"no family or group of ≥ {FAMILY_MIN_TRACES} traces below {TARGET_FAMILY_PT} pt): "
        f"**{'met' if ok else 'missed'}**" + ("" if ok else f" ({'; '.join(failed)})") + "."
    )
    return "\n".join(lines) + "\n\n" + target
