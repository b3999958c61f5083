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
