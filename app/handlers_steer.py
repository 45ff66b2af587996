"""Steer-tab handlers (no gradio): generation with per-slot edits (an empty slot is no
edit), the per-edit readout and causal check, the plus/minus strip, feature icons.

Every generation takes its turn in the steerer's `FairQueue` and carries a `Job`, whose
cancel flag the diffusion loop checks at each step (the Stop button, a client's cancel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from sae_core.edit import Edit, validate_edits

from .inputs import MAX_SEED, finite_number, menu_latent, read_upload, whole_number
from .jobs import Job
from .readout import EditReadout, causal_check, edit_readout
from .render import for_display
from .steer import DEFAULT_GUIDANCE, MAX_GUIDANCE, MAX_STEPS, RESOLUTIONS, Generation, Steerer, parse_edits
from .timing import Timings

if TYPE_CHECKING:
    from .atlas import Atlas
    from .icons import IconStore
    from .inspect_image import Inspector

UNAVAILABLE = "steering is not available: the Kandinsky 2.2 models or the steering SAE are not loaded"
MODES = ("multiply", "set", "add")


@dataclass
class SteerView:
    """What Generate shows."""

    original: Image.Image
    steered: Image.Image
    readout: str
    active: str
    active_ids: list[tuple[int, float]] = field(default_factory=list)
    """(latent, activation) of the most active steering latents, strongest first."""
    edits: list[Edit] = field(default_factory=list)
    """The edits this generation made (the UI records them in the history)."""


def slot_edits(slots: list[tuple[Any, Any, Any]], d_sae: int) -> list[Edit]:
    """Edits from Steer slots (latent, mode, value): a slot whose latent is empty is no edit."""
    return slot_edits_from(slots, d_sae, 1)


def slot_edits_from(slots: list[tuple[Any, Any, Any]], d_sae: int, first: int) -> list[Edit]:
    """`slot_edits` for slots numbered from `first` (so a message names the slot the user sees)."""
    edits = []
    for k, (latent, mode, value) in enumerate(slots, first):
        if latent is None or (isinstance(latent, str) and not latent.strip()):
            continue
        if isinstance(latent, float) and latent != latent:  # NaN: an emptied number box
            continue
        lat = whole_number(latent, f"slot {k}'s latent", 0, d_sae - 1)
        if mode not in MODES:
            raise ValueError(f"slot {k}'s mode must be one of {', '.join(MODES)}; got {mode!r}")
        edits.append(Edit(lat, mode, finite_number(value, f"slot {k}'s value")))
    return edits


def free_slot(latents: list[Any], latent: int) -> tuple[int, bool]:
    """(slot index, whether it already holds `latent`) for putting a latent in a slot: the slot
    that holds it already (never two slots with one latent), else the first empty one."""
    held = [str(v or "").strip() for v in latents]
    if str(latent) in held:
        return held.index(str(latent)), True
    if "" in held:
        return held.index(""), False
    raise ValueError(f"all {len(held)} slots are in use; empty one (clear its latent) to add latent {latent}")


class SteerHandlers:
    """Mixed into `app.handlers.Handlers`, which provides the steerer and atlases."""

    steerer: Steerer | None
    steer_atlas: Atlas | None
    inspector: Inspector | None
    timings: Timings | None
    icons: IconStore | None
    atlas: Atlas

    def _steerer(self) -> Steerer:
        if self.steerer is None:
            raise ValueError(UNAVAILABLE)
        return self.steerer

    def steer_this_edit(
        self, sae: str | None, latent: Any, choice: str | None, slots: list[Any], then: str = "Press Generate."
    ) -> tuple[int, Edit, tuple[str, int] | None, str]:
        """'Steer this' (or a latent picked in the Steer tab) → (slot index, edit, linked CLIP
        latent, message). The edit *adds* the latent's direction × its highest activation over the
        atlas, so the latent moves up from wherever the prompt already has it (a `set` to that
        value would weaken a latent the prompt has more of); a latent already in a slot keeps it.
        The message ends with `then`, the user's next step."""
        s = self.steer_this(sae, latent, choice)  # type: ignore[attr-defined]
        k, again = free_slot(slots, s.latent)
        why = f", linked from {s.origin[0]} latent {s.origin[1]}" if s.origin else ""
        where = f"already in slot {k + 1}: its edit is now" if again else f"in slot {k + 1}:"
        message = (
            f"Latent {s.latent}{why} {where} **+ direction × {s.value:.3g}** (its highest activation over "
            f"the atlas's images), added to what the prompt already has, so the feature only grows. "
            f"{then}"
        )
        return k, Edit(s.latent, "add", s.value), s.origin, message

    def slot_from_list(
        self, sae: str | None, latent: Any, slots: list[Any], choice: str | None = None
    ) -> tuple[int, Edit, tuple[str, int] | None, str]:
        """A latent picked in a list outside the Steer tab (Inspect's table or patch list,
        Browse's page) put in a Steer slot while the user stays where they are: a steering
        latent goes in as itself, a CLIP latent through the linked steering latent `choice`,
        else its most co-activating one (refused by name when it has none); otherwise as
        `steer_this_edit`."""
        latent = menu_latent(latent)
        if not choice:
            linked = self.linked_choices(latent, sae or "")  # type: ignore[attr-defined]
            choice = linked[0] if linked else None
        return self.steer_this_edit(sae, latent, choice, slots, then="Generate in the Steer tab.")

    def generation_params(self, seed: Any, steps: Any, resolution: Any) -> tuple[int, int, int]:
        """Checked (seed, steps, resolution); None steps/resolution mean the device's defaults."""
        t = self.timings or Timings(device=self.steerer.device if self.steerer is not None else "cpu")
        steps = t.default_steps if steps in (None, "") else steps
        resolution = t.default_size() if resolution in (None, "") else resolution
        size = whole_number(resolution, "the resolution", 1, max(RESOLUTIONS))
        if size not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))}; got {resolution!r}")
        return (whole_number(seed, "the seed", 0, MAX_SEED), whole_number(steps, "steps", 1, MAX_STEPS), size)

    def _run(
        self,
        prompt: str,
        image: Any,
        seed: Any,
        steps: Any,
        resolution: Any,
        edits: list[Edit],
        job: Job | None,
        with_original: bool = True,
        guidance: Any = None,
    ) -> tuple[Generation, Image.Image | None]:
        s = self._steerer()
        scale = DEFAULT_GUIDANCE if guidance in (None, "") else finite_number(guidance, "the guidance scale")
        if not 1.0 <= scale <= MAX_GUIDANCE:
            raise ValueError(f"the guidance scale must be between 1 and {MAX_GUIDANCE:g}; got {guidance!r}")
        start = read_upload(image, "the start image")
        seed, steps, size = self.generation_params(seed, steps, resolution)
        edits = validate_edits(edits, s.sae.cfg.d_sae) or edits
        job = job or Job()
        with s.queue.turn(job):
            return s.generate(
                prompt,
                edits,
                seed=seed,
                steps=steps,
                size=size,
                prior_steps=steps,
                image=start,
                with_original=with_original,
                job=job,
                guidance=scale,
            ), start

    def steer(
        self,
        prompt: str,
        edits: str,
        mode: str = "multiply",
        seed: float = 0,
        steps: float | None = None,
        resolution: float | None = None,
        image: Any = None,
        job: Job | None = None,
    ) -> tuple[Image.Image, Image.Image]:
        """(original, steered) for typed edits 'latent:value, …' all in one mode; an uploaded
        start image replaces the prompt. Steps and resolution default to the device's."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        parsed = [Edit(lat, mode, val) for lat, val in parse_edits(edits)]  # type: ignore[arg-type]
        gen, _ = self._run(prompt, image, seed, steps, resolution, parsed, job)
        return gen.original, gen.steered  # type: ignore[return-value]

    def generate_view(
        self,
        prompt: str,
        image: Any,
        seed: Any,
        steps: Any,
        resolution: Any,
        edits: list[Edit],
        origins: dict[int, tuple[str, int]] | None = None,
        causal: bool = True,
        job: Job | None = None,
        guidance: Any = None,
    ) -> SteerView:
        """Generate with the given edits; the readout says what each edit did to its latent
        and to the embedding, and (causal check) whether the latent moved in the images."""
        job = job or Job()
        gen, start = self._run(prompt, image, seed, steps, resolution, edits, job, guidance=guidance)
        s = self._steerer()
        parts = [f"Started from **{'the uploaded image (the prompt is not used)' if start else 'the prompt'}**."]
        if not edits:
            parts.append("No edit (every slot is empty): the steered image is the original.")
        else:
            parts.append(self._readout(gen, edits))
            if causal:
                job.progress(1.0, "causal check: re-encoding both images")
                parts.append(self._causal(gen, edits, origins or {}))
        active = s.active_latents(gen.x, n=12)
        what = "image" if start is not None else "prompt"
        names = ", ".join(f"{i} ({v:.3g})" for i, v in active)  # no links: a click must not leave the tab
        active_md = (
            f"Most active steering latents of this {what}: {names}"
            if active
            else "No steering latent is active in this embedding."
        )
        return SteerView(
            for_display(gen.original), for_display(gen.steered), "\n\n".join(parts), active_md, active, list(edits)
        )

    def _readout(self, gen: Generation, edits: list[Edit]) -> str:
        rows, shift = edit_readout(self._steerer(), gen, edits)
        verb = {"multiply": "×", "set": "set to", "add": "+ direction ×"}
        lines = [
            "| edit | its activation: in the embedding → in the steered embedding (re-encoded by the SAE) |",
            "|---|---|",
        ]
        lines += [
            f"| latent {r.edit.latent} {verb[r.edit.mode]} {r.edit.value:.3g} | {r.before:.3g} → "
            f"**{r.after:.3g}**{_little_change(r)} |"
            for r in rows
        ]
        lines.append(
            f"\nEmbedding: ‖x′‖ / ‖x‖ = **{shift.norm_ratio:.3f}**, cos(x, x′) = **{shift.cosine:.3f}**"
            + (
                " — ⚠️ **far from the original embedding**: the decoder may leave its training "
                "distribution (expect artifacts); try smaller values."
                if shift.far
                else "."
            )
        )
        return "\n".join(lines)

    def _causal(self, gen: Generation, edits: list[Edit], origins: dict[int, tuple[str, int]]) -> str:
        checks = causal_check(self._steerer(), gen, [e.latent for e in edits])
        lines = [
            "**Causal check** — both images re-encoded (steering latents by the prior's image encoder):",
            "| latent | original image | steered image |",
            "|---|---|---|",
        ]
        lines += [
            f"| steering {c.latent} | {c.original:.3g} | **{c.steered:.3g}** {_arrow(c.original, c.steered)} |"
            for c in checks
        ]
        clip = sorted({(name, lat) for name, lat in origins.values() if name == self.atlas.name})
        if clip and self.inspector is not None and gen.original is not None:
            before = self.inspector.run(gen.original)["scores"]
            after = self.inspector.run(gen.steered)["scores"]
            lines += [
                f"| {name} {lat} (linked) | {before[lat]:.3g} | **{after[lat]:.3g}** "
                f"{_arrow(before[lat], after[lat])} |"
                for name, lat in clip
            ]
        return "\n".join(lines)

    def steer_strip(
        self,
        prompt: str,
        latent: Any,
        amount: Any = None,
        seed: float = 0,
        steps: float | None = None,
        resolution: float | None = None,
        image: Any = None,
        job: Job | None = None,
    ) -> list:
        """Seed 001's plus/minus strip: −amount · direction, original, +amount · direction
        (amount empty: twice the latent's highest activation over the atlas's images)."""
        s = self._steerer()
        if latent in (None, "") or (isinstance(latent, float) and latent != latent):
            raise ValueError("name the steering latent for the strip")
        j = whole_number(latent, "the strip's latent", 0, s.sae.cfg.d_sae - 1)
        if amount in (None, ""):
            top = float(self.steer_atlas.max_activation[j]) if self.steer_atlas is not None else 0.0
            amount = 2 * (top if top > 0 else (self.steer_atlas.typical_max if self.steer_atlas else 1.0))
        amount = finite_number(amount, "the amount")
        job = job or Job()
        out = []
        for k, (sign, name) in enumerate(((-1, "minus"), (0, "original"), (1, "plus"))):
            edits = [Edit(j, "add", sign * amount)] if sign else []
            job.progress(k / 3, f"strip: {name}")
            gen, _ = self._run(prompt, image, seed, steps, resolution, edits, job, with_original=False)
            out.append((for_display(gen.steered), f"{name} ({sign * amount:+.3g} × direction {j})" if sign else name))
        return out

    def icon(self, sae: str | None, latent: Any, job: Job | None = None) -> str | None:
        """The feature icon of a steering latent (made on demand, in the generation queue)."""
        if self.icons is None or self.steer_atlas is None or sae != self.steer_atlas.name:
            return None
        j = self.steer_atlas.check_latent(latent)
        if self.steer_atlas.frequency[j] <= 0:
            return None
        found = self.icons.lookup(j)
        if found is not None:
            return str(found)
        job = job or Job()
        with self._steerer().queue.turn(job):
            return str(self.icons.get(j, job))


def _little_change(r: EditReadout) -> str:
    """A note when an edit cannot change much: × on an inactive latent, or set to about its value."""
    if r.edit.mode == "multiply" and r.before == 0:
        return " (inactive here: × does nothing; use set or add)"
    if r.edit.mode == "set" and abs(r.before - r.edit.value) <= 0.1 * abs(r.edit.value):
        return " (already about that value here: little change; use add or a larger value)"
    return ""


def _arrow(before: float, after: float) -> str:
    return "↑" if after > before else "↓" if after < before else "(unchanged)"
