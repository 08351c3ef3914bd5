"""``gate calibrate``: run the baseline against itself (A/A) and propose bounds from the noise seen."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gate._config.schema import GateConfig, load_config
from gate._errors import ConfigError, RunError
from gate._verdict.schema import CheckReport, Verdict

__all__ = ["CalibrateOptions", "Noise", "aa_config", "calibrate", "measure_noise", "render_proposal"]

_RELATIVE = ("max_increase_pct", "max_decrease_pct", "max_increase", "max_decrease")


def aa_config(config: GateConfig) -> GateConfig:
    """The config with the baseline in both seats, fixed repeats (no adaptation), nothing able to stop early."""
    if config.baseline is None:
        return config  # gate run then names what is missing
    # Both seats run the same code: a baseline taken from a git revision runs from the working tree here.
    baseline = config.baseline.model_copy(update={"ref": None, "target": config.target("baseline")})
    candidate = baseline.model_copy(update={"label": f"{config.label('baseline')} (A/A)"})
    run = config.run.model_copy(update={"max_repeats": config.run.repeats})
    return config.model_copy(update={"baseline": baseline, "candidate": candidate, "run": run})


@dataclass(frozen=True)
class Noise:
    """The spread of one check's A/A change over the calibration rounds."""

    metric: str
    bound_name: str
    current: float
    worst_point: float  # the largest change in the bound's direction seen in any round
    worst_interval: float  # the largest interval end in the bound's direction
    rounds: int

    @property
    def proposed(self) -> float:
        """A round number above everything A/A produced, with 20% headroom: it would not have fired."""
        return _nice_ceil(max(self.worst_interval, self.worst_point, 0.0) * 1.2)


def _nice_ceil(value: float) -> float:
    if value <= 0:
        return 0.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _directional(check: CheckReport, name: str) -> tuple[float, float] | None:
    """(point change, interval end) of an A/A round, in the bound's unit, as magnitudes.

    In A/A the direction of a change is chance; the noise is how far from zero it strays either way, so the
    proposal uses the larger of both interval ends (and never proposes a bound of 0 because one round fell).
    """
    pct = name.endswith("_pct")
    point = check.delta_pct if pct else check.delta
    if point is None:
        return None
    end = abs(point)
    if check.ci_of == ("delta_pct" if pct else "delta") and check.ci_low is not None and check.ci_high is not None:
        end = max(abs(check.ci_low), abs(check.ci_high))
    return abs(point), end


def measure_noise(config: GateConfig, verdicts: Sequence[Verdict]) -> list[Noise]:
    """Per check and relative bound, the worst A/A change over the rounds."""
    out = []
    for index, check in enumerate(config.checks):
        for name, limit in check.bounds().items():
            if name not in _RELATIVE:
                continue
            seen = [d for v in verdicts if (d := _directional(v.checks[index], name)) is not None]
            if seen:
                out.append(
                    Noise(check.metric, name, limit, max(p for p, _ in seen), max(e for _, e in seen), len(seen))
                )
    return out


def render_proposal(noise: Sequence[Noise], rounds: int, cases: int, repeats: int) -> str:
    """The YAML snippet printed to stdout, with the evidence as comments."""
    lines = [
        f"# gate calibrate: {rounds} A/A rounds of the baseline against itself, {cases} cases x {repeats} repeats.",
        "# Each bound below is above every change (and every interval end) those rounds showed, plus 20%.",
        "checks:",
    ]
    for n in noise:
        unit = "%" if n.bound_name.endswith("_pct") else ""
        evidence = f"A/A worst change ±{n.worst_point:.3g}{unit}, intervals reached ±{n.worst_interval:.3g}{unit}"
        lines.append(f"  - metric: {n.metric}  # {evidence}; configured {n.current:g}")
        lines.append(f"    {n.bound_name}: {n.proposed:g}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CalibrateOptions:
    """What the command line decides about a calibration."""

    config_path: Path
    rounds: int = 3
    simulate: bool = False
    tracking_uri: str | None = None


def calibrate(options: CalibrateOptions) -> str:
    """Run ``rounds`` A/A gates and return the proposal; an A/A round that errs raises ``RunError`` (exit 3)."""
    from gate._commands.run import RunOptions, run_gate

    if options.rounds < 1:
        raise ConfigError("usage: --rounds must be at least 1")
    run = RunOptions(config_path=options.config_path, simulate=options.simulate, tracking_uri=options.tracking_uri)
    verdicts = []
    for round_number in range(1, options.rounds + 1):
        verdict = run_gate(run, transform=aa_config)
        if verdict.status == "error":
            raise RunError(f"A/A round {round_number}: {verdict.error}")
        calls = verdict.spend.calls if verdict.spend else 0
        print(f"gate calibrate: round {round_number}/{options.rounds} done ({calls} calls)", file=sys.stderr)
        verdicts.append(verdict)
    config = aa_config(load_config(options.config_path))
    first = verdicts[0]
    cases = (first.variants["baseline"].calls // max(config.run.repeats, 1)) if first.variants else 0
    return render_proposal(measure_noise(config, verdicts), options.rounds, cases, config.run.repeats)
