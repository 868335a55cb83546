"""The synthetic short-video platform: the embedded default data set with a known ground truth.

Ground truth real logs never give (README 'The synthetic platform'):

* a latent 4-level topic taxonomy with readable names; items are spread over leaves so that
  every topic carries about the same traffic (the tree is meant to be recoverable);
* titles carry the topic only partly (facet words appear with some probability, among filler
  and the occasional misleading word), media carry it fully (see :mod:`serendip.data.media`);
* each leaf has a *bridge*: a sibling level-3 topic under the same level-2 ancestor whose
  items its viewers enjoy; the bridge's texture is drawn as a motif in the leaf's media;
* users have 1–3 interest leaves and, per interest, a hidden affinity for its bridge;
* sessions follow a production-like policy that mostly stays on topic and only sometimes jumps
  to a sibling topic, so bridges are rare in the logs; satisfaction follows the user's interests
  plus noise: familiar < bridge-with-affinity, so serendipitous pairs beat similar ones.

Everything is vectorised over sessions; the same seed gives byte-identical tables.

Modules: :mod:`~serendip.data.synth.config` (:class:`SynthConfig`, :class:`SatisfactionModel`,
:class:`PolicyModel`), :mod:`~serendip.data.synth.taxonomy` (:class:`Taxonomy`, bridges),
:mod:`~serendip.data.synth.catalogue` (items, titles, media), :mod:`~serendip.data.synth.users`
(interests, affinities, satisfaction, the logged policy), :mod:`~serendip.data.synth.logs`
(the session simulation), :mod:`~serendip.data.synth.truth` (ground-truth tables, the recall
ceiling) and :mod:`~serendip.data.synth.generate` (:func:`synthesize`, :func:`write_synth`).
"""

from serendip.data.synth.catalogue import make_items
from serendip.data.synth.config import EPOCH_US, PolicyModel, SatisfactionModel, SynthConfig
from serendip.data.synth.generate import synthesize, write_synth
from serendip.data.synth.logs import make_interactions
from serendip.data.synth.taxonomy import Taxonomy, build_taxonomy
from serendip.data.synth.truth import recall_ceiling, truth_tables
from serendip.data.synth.users import expected_satisfaction, make_users, with_context

__all__ = [
    "EPOCH_US", "PolicyModel", "SatisfactionModel", "SynthConfig", "Taxonomy", "build_taxonomy",
    "expected_satisfaction", "make_interactions", "make_items", "make_users", "recall_ceiling",
    "synthesize", "truth_tables", "with_context", "write_synth",
]
