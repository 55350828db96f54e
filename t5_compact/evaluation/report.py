"""Evaluation report: JSON, markdown tables per metric and category, bar and scaling charts, image grids."""

from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

from .metrics import mean
from .run import EvalResult, StudentResult, finite_or_none

# (key, title, better) for the per-prompt metrics; L_vision comes per category from the shared function.
METRICS = (
    ("l_vision", "L_vision along the teacher's trajectories", "lower"),
    ("fidelity", "Prompt-specific fidelity 1 − L_vision / L_null (1: teacher, 0: null student)", "higher"),
    ("l_vision_uncond", 'L_vision of the negative-prompt ("") branch', "lower"),
    ("latent_mse", "Final latents MSE vs teacher", "lower"),
    ("psnr", "PSNR vs teacher images (dB)", "higher"),
    ("ssim", "SSIM vs teacher images", "higher"),
    ("clip", "CLIP score", "higher"),
)
ALL = "all"


def _weighted(values: dict[str, float], counts: dict[str, int]) -> float | None:
    """Prompt-weighted mean over categories (None when a category is missing)."""
    if not values or any(c not in values for c in counts):
        return None
    return sum(values[c] * n for c, n in counts.items()) / max(sum(counts.values()), 1)


def summary(
    student: StudentResult, categories: dict[str, list[str]], null: dict[str, float] | None = None
) -> dict[str, dict[str, float | None]]:
    """`{category | "all": {metric: mean}}` for one student (None where a metric was not measured). `null`: the
    null student's L_vision per category, for the prompt-specific fidelity `1 - L_vision / L_null`."""
    out: dict[str, dict[str, float | None]] = {}
    groups = {c: [o for o in student.outcomes if o.category == c] for c in categories}
    groups[ALL] = list(student.outcomes)
    counts = {c: len(p) for c, p in categories.items()}
    for name, outcomes in groups.items():
        row: dict[str, float | None] = {}
        if name == ALL:
            row["l_vision"] = _weighted(student.l_vision, counts)
            row["l_vision_uncond"] = _weighted(student.l_vision_uncond, counts)
            l_null = _weighted(null or {}, counts)
        else:
            row["l_vision"] = student.l_vision[name]
            row["l_vision_uncond"] = student.l_vision_uncond.get(name)
            l_null = (null or {}).get(name)
        row["fidelity"] = 1.0 - row["l_vision"] / l_null if l_null else None
        for key in ("latent_mse", "psnr", "ssim", "clip"):
            values = [getattr(o, key) for o in outcomes if getattr(o, key) is not None]
            row[key] = mean(values) if values else None
        out[name] = row
    return out


def teacher_clip_summary(result: EvalResult) -> dict[str, float | None]:
    """Mean CLIP score of the teacher's images per category and overall (None without a CLIP model)."""
    if not result.teacher_clip:
        return {}
    out = {c: mean([v for (cat, _, _), v in result.teacher_clip.items() if cat == c]) for c in result.categories}
    out[ALL] = mean(list(result.teacher_clip.values()))
    return out


def to_dict(result: EvalResult) -> dict[str, object]:
    """JSON-ready result; `inf` (identical images) is written as the string "inf"."""

    def clean(row: dict) -> dict:
        return {k: finite_or_none(v) for k, v in row.items()}

    students = []
    for student in result.students:
        students.append(
            {
                "label": student.label,
                "source": student.source,
                "params": student.params,
                "summary": {c: clean(r) for c, r in summary(student, result.categories, result.null_l_vision).items()},
                "per_prompt": [
                    clean(
                        dict(
                            category=o.category,
                            prompt=o.prompt,
                            seed=o.seed,
                            latent_mse=o.latent_mse,
                            psnr=o.psnr,
                            ssim=o.ssim,
                            clip=o.clip,
                        )
                    )
                    for o in student.outcomes
                ],
            }
        )
    return {
        "meta": result.meta,
        "categories": result.categories,
        "teacher_clip": clean(teacher_clip_summary(result)),
        "null_student": {"l_vision": clean(result.null_l_vision)},
        "students": students,
    }


def _fmt(value: float | None, key: str) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if key in ("psnr", "clip"):
        return f"{value:.2f}"
    if key == "fidelity":
        return f"{value:.3f}"
    if key == "ssim":
        return f"{value:.4f}"
    return f"{value:.4g}"


def to_markdown(result: EvalResult, charts: dict[str, str], grids: dict[str, str]) -> str:
    """The report: setup, one table per metric (rows: categories + all; columns: students), charts, grids."""
    meta = result.meta
    summaries = {s.label: summary(s, result.categories, result.null_l_vision) for s in result.students}
    teacher_clip = teacher_clip_summary(result)
    null = dict(result.null_l_vision)
    if null:
        null[ALL] = _weighted(null, {c: len(p) for c, p in result.categories.items()})
    rows = [*result.categories, ALL]
    lines = [
        "# Student fidelity to the teacher",
        "",
        f"- Hardware: **{meta['hardware']}**; dtype `{meta['dtype']}`",
        f"- Pipeline `{meta['pipeline']}` ({meta['family']}); teacher `{meta['teacher']}` "
        f"({meta['teacher_params']:,} params)",
        "- Students: " + ", ".join(f"`{s.label}` ({s.params:,} params, `{s.source}`)" for s in result.students),
        f"- Prompts `{meta['prompts']}`: " + ", ".join(f"{c} ({n})" for c, n in meta["prompts_per_category"].items()),
        f"- {meta['steps']} steps, {meta['resolution']} px, guidance {meta['guidance']}"
        + (" (classifier-free)" if meta.get("classifier_free_guidance") else "")
        + f", seeds {meta['seeds']}, T5 length {meta['max_sequence_length']}"
        + (", CLIP pooled vector zeroed" if meta.get("zero_pooled") else ""),
        "- L_vision: mean squared difference of the transformer's velocity with the student's vs the teacher's "
        "embeddings at every step of the teacher's trajectory (fixed noise per prompt and seed), computed by "
        f"`{meta['l_vision_function']}` (the same function training logs). Final latents / images: the student "
        "drives the sampler from the same noise"
        + (
            ' with classifier-free guidance on the student\'s own prompt and "" embeddings.'
            if meta.get("classifier_free_guidance")
            else "."
        )
        + f" Null student: {meta.get('null_student', '–')}; fidelity = 1 − L_vision / L_null.",
        f"- Command: `{meta['command']}`",
        "",
    ]
    for key, title, better in METRICS:
        present = any(summaries[s][ALL][key] is not None for s in summaries)
        if not present:
            continue
        lines += [f"## {title} ({better} is better)", ""]
        columns = list(summaries)
        if key == "clip" and teacher_clip:
            columns = ["teacher", *columns]
        if key == "l_vision" and null:
            columns = ["null student", *columns]
        lines.append("| Category | " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * (1 + len(columns)))
        for row in rows:
            cells = []
            for col in columns:
                if col == "teacher":
                    value = teacher_clip.get(row)
                elif col == "null student":
                    value = null.get(row)
                else:
                    value = summaries[col][row][key]
                cells.append(_fmt(value, key))
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
    for name, path in charts.items():
        lines += [f"![{name}]({path})", ""]
    if grids:
        lines += ["## Image grids (teacher | students, one row per prompt, first seed)", ""]
        lines += [f"- {category}: ![{category}]({path})" for category, path in grids.items()]
        lines.append("")
    return "\n".join(lines)


def plot_by_category(result: EvalResult, path: Path) -> Path:
    """Grouped bars per category (one bar per student), one panel per measured metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    summaries = {s.label: summary(s, result.categories, result.null_l_vision) for s in result.students}
    categories = list(result.categories)
    keys = [m for m in METRICS if all(_plottable(summaries[s][c][m[0]]) for s in summaries for c in categories)]
    fig, axes = plt.subplots(len(keys), 1, figsize=(max(6, 1.2 * len(categories) + 3), 2.8 * len(keys)), dpi=100)
    axes = np.atleast_1d(axes)
    width = 0.8 / max(len(summaries), 1)
    for ax, (key, title, better) in zip(axes, keys, strict=True):
        for i, (label, rows) in enumerate(summaries.items()):
            xs = np.arange(len(categories)) + (i - (len(summaries) - 1) / 2) * width
            ax.bar(xs, [rows[c][key] for c in categories], width, label=label)
        ax.set_xticks(np.arange(len(categories)), categories, rotation=20, fontsize=8)
        ax.set_title(f"{title} ({better} is better)", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plottable(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def plot_scaling(result: EvalResult, path: Path) -> Path:
    """Overall metrics against student parameter count (log x), like the paper's Figure 1; the teacher's CLIP score
    as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    students = sorted(result.students, key=lambda s: s.params)
    summaries = {s.label: summary(s, result.categories, result.null_l_vision)[ALL] for s in students}
    keys = [(k, t, b) for k, t, b in METRICS if all(_plottable(summaries[s.label][k]) for s in students)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), dpi=100)
    axes = np.atleast_1d(axes)
    teacher_clip = teacher_clip_summary(result).get(ALL)
    for ax, (key, title, better) in zip(axes, keys, strict=True):
        xs = [s.params for s in students]
        ys = [summaries[s.label][key] for s in students]
        ax.plot(xs, ys, marker="o")
        for s, x, y in zip(students, xs, ys, strict=True):
            ax.annotate(s.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if key == "clip" and teacher_clip is not None:
            ax.axhline(teacher_clip, linestyle="--", color="gray", label="teacher")
            ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("student parameters")
        ax.set_title(f"{title}\n({better} is better)", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def image_grid(columns: dict[str, list[Image.Image]], max_rows: int = 8, min_side: int = 128) -> Image.Image:
    """Columns of images (teacher, then students) with a label row on top; small images are enlarged."""
    from ..training.validation import grid

    first = next(iter(columns.values()))[0]
    scale = max(1, math.ceil(min_side / min(first.size)))
    size = (first.width * scale, first.height * scale)
    header = []
    for label in columns:
        cell = Image.new("RGB", (size[0], 18), "white")
        ImageDraw.Draw(cell).text((3, 3), label[: max(4, size[0] // 7)], fill="black")
        header.append(cell)
    rows = [[img.resize(size, Image.NEAREST) for img in row] for row in zip(*columns.values(), strict=True)]
    body = grid(rows[:max_rows])
    canvas = Image.new("RGB", (body.width, body.height + 18), "white")
    for i, cell in enumerate(header):
        canvas.paste(cell, (i * size[0], 0))
    canvas.paste(body, (0, 18))
    return canvas


def write_report(result: EvalResult, out_dir: str | Path, grid_rows: int = 8) -> dict[str, Path]:
    """Write `eval.json`, `eval.md`, `by_category.png`, `scaling.png` and `grids/<category>.png` into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "eval.json", "md": out / "eval.md"}
    paths["json"].write_text(json.dumps(to_dict(result), indent=2) + "\n")
    charts = {}
    if result.students:
        paths["by_category"] = plot_by_category(result, out / "by_category.png")
        paths["scaling"] = plot_scaling(result, out / "scaling.png")
        charts = {"per-category metrics": "by_category.png", "scaling with student size": "scaling.png"}
    grids = {}
    for category, columns in result.images.items():
        grid_path = out / "grids" / f"{category}.png"
        grid_path.parent.mkdir(exist_ok=True)
        image_grid(columns, grid_rows).save(grid_path)
        grids[category] = f"grids/{category}.png"
        paths[f"grid:{category}"] = grid_path
    paths["md"].write_text(to_markdown(result, charts, grids))
    return paths
