"""Count the Z-Image DiT's forward calls: the batch size of every ComfyUI `NextDiT.forward` call
while active (a class-level wrapper, removed on exit). One spy for the benchmark (in process),
the tests and the test server probe (inside a ComfyUI server). Imports ComfyUI only when entered."""

from __future__ import annotations


class ForwardSpy:
    def __init__(self):
        self.batches: list[int] = []
        self._cls = None

    def __enter__(self):
        import comfy.ldm.lumina.model as lumina

        self._cls = lumina.NextDiT
        self._orig = self._cls.__dict__["forward"]
        orig, batches = self._orig, self.batches

        def counted(module, x, *args, **kwargs):
            batches.append(int(x.shape[0]))
            return orig(module, x, *args, **kwargs)

        counted.__wrapped__ = orig
        self._cls.forward = counted
        return self

    def __exit__(self, *exc):
        if self._cls is not None:
            self._cls.forward = self._orig
            self._cls = None
        return False

    @property
    def calls(self) -> int:
        return len(self.batches)

    def summary(self) -> dict:
        return {
            "calls": self.calls,
            "samples": sum(self.batches),
            "desc": self.describe(),
            "batches": list(self.batches),
        }

    def describe(self) -> str:
        """'28 x b2' or '24 x b2 + 4 x b1'."""
        if not self.batches:
            return "0"
        counts: dict[int, int] = {}
        for b in self.batches:
            counts[b] = counts.get(b, 0) + 1
        return " + ".join(f"{n} x b{b}" for b, n in sorted(counts.items(), reverse=True))


class GuiderStepSpy:
    """How each step of the Z-Image CFG Guider ran while active: "batched" (the one batched
    forward alone), "sequential" (ComfyUI's calc_cond_batch alone: batching off, refused, or a
    failed verdict), "verify" (both: a first step of a new signature). Wraps the module functions
    of the pack's host/batched_cfg.py (pass that module, as the host loaded it)."""

    def __init__(self, batched_cfg):
        self.module = batched_cfg
        self.counts = {"batched": 0, "sequential": 0, "verify": 0}
        self._saved = None

    def __enter__(self):
        import comfy.samplers

        m, ran = self.module, []
        saved = (m.calc_conds, m.batched_conds, comfy.samplers.calc_cond_batch)
        calc_conds, batched_conds, calc_cond_batch = saved

        def spy_calc_conds(*args, **kwargs):
            ran.clear()
            ran.append("step")
            try:
                return calc_conds(*args, **kwargs)
            finally:
                kinds = set(ran[1:])
                ran.clear()
                self.counts[
                    "verify" if kinds == {"mirror", "host"} else "batched" if kinds == {"mirror"} else "sequential"
                ] += 1

        def spy_batched_conds(*args, **kwargs):
            ran.append("mirror")
            return batched_conds(*args, **kwargs)

        def spy_calc_cond_batch(*args, **kwargs):
            if ran:
                ran.append("host")
            return calc_cond_batch(*args, **kwargs)

        m.calc_conds, m.batched_conds, comfy.samplers.calc_cond_batch = (
            spy_calc_conds,
            spy_batched_conds,
            spy_calc_cond_batch,
        )
        self._saved = saved
        return self

    def __exit__(self, *exc):
        import comfy.samplers

        if self._saved is not None:
            self.module.calc_conds, self.module.batched_conds, comfy.samplers.calc_cond_batch = self._saved
            self._saved = None
        return False


class NagCallSpy:
    """What the Z-Image NAG patch did on each model call while active: (sigma, "nag" | "off" |
    "fallback") in `history`, totals in `counts`. Wraps the patch class of the pack's
    host/nag_patch.py and the NAG layout's join (pass that module, as the host loaded it)."""

    def __init__(self, nag_patch):
        self.module = nag_patch
        self.history: list[tuple[float, str]] = []
        self._saved = None

    @property
    def counts(self) -> dict:
        out = {"nag": 0, "off": 0, "fallback": 0}
        for _, what in self.history:
            out[what] += 1
        return out

    def __enter__(self):
        import torch

        cls, layout = self.module.NagPatch, self.module.zimage_nag.NagLayout
        saved = (cls.__call__, cls._fallback, layout.join)
        call, fallback, join = saved
        seen: list[str] = []

        def spy_call(patch, executor, x, timesteps, *args, **kwargs):
            options = kwargs.get("transformer_options") or {}
            sigma = float(torch.as_tensor(options.get("sigmas", timesteps)).min())
            seen.clear()
            try:
                return call(patch, executor, x, timesteps, *args, **kwargs)
            finally:
                self.history.append((sigma, "fallback" if "fallback" in seen else "nag" if seen else "off"))

        def spy_fallback(patch, *args, **kwargs):
            seen.append("fallback")
            return fallback(patch, *args, **kwargs)

        def spy_join(*args, **kwargs):
            seen.append("nag")
            return join(*args, **kwargs)

        cls.__call__, cls._fallback, layout.join = spy_call, spy_fallback, spy_join
        self._saved = saved
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            cls = self.module.NagPatch
            cls.__call__, cls._fallback, self.module.zimage_nag.NagLayout.join = self._saved
            self._saved = None
        return False
