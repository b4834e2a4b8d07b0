"""sepo: Selective Preference Optimization (SePO) and Selective-DPO, reproducible on a mini world.

Modules, one per concern: :mod:`sepo.logprobs` (per-token log-probs and the shift convention),
:mod:`sepo.data` (preference data), :mod:`sepo.scoring` (token rewards), :mod:`sepo.selectors`
(token selection), :mod:`sepo.losses` (loss registry), and one module per stage.
"""

__version__ = "0.1.0"
