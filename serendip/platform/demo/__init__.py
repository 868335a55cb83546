"""``serendip demo``: every stage on the embedded default (or on your own tables), then a report.

synth (into ``platform/``) → hold out each user's last transition → training pipeline
(kfp.local) → promotion gate → scoring pipeline (kfp.local, Feast) → start the server → a few
``recommend`` calls → online simulation (+ ablations) → replay evaluation → report.

With ``--data DIR`` (your own tables, e.g. the output of ``serendip import recbole``) there is
no synthetic ground truth: each user's last transition is held out FIRST (the replay split of
:mod:`serendip.evaluation.replay`, written into the work directory), every model is trained on
the rest, and the replay evaluation of the held-out transitions replaces the online simulation
and the ablations (the report says so). The prompt strategy follows the media present (the
curation stage adapts: text-only tables get the text prompt).

Everything it makes stays inside its work directory, so two demos never collide and the
source tree stays clean; finished steps are reused when it is run again.
"""

from serendip.platform.demo.flow import check_data_dir, run_demo
from serendip.platform.demo.sizes import SIZES, DemoSize, size_preset

__all__ = ["SIZES", "DemoSize", "check_data_dir", "run_demo", "size_preset"]
