"""Input validation shared by the whole package: clear errors, and no host sync on hot paths.

Every check has two parts:

* **structure** (type, shape, dtype): free, read from tensor metadata; always runs.
* **values** (NaN / Inf, label ranges, "at least two classes"): needs the data, i.e. a host sync
  (``bool(tensor)``) on a GPU, and breaks ``torch.compile`` graphs. It runs when the call passes
  ``values=True``, or, with ``values=None`` (the building blocks' default), when the module-level
  switch is on (:func:`value_checks_enabled`, on by default).

The LightningModules validate each training batch once at their boundary (:func:`check_batch`,
one host sync for all value checks) and then run the losses, the generator and the graph builder
inside ``with value_checks(False):``, so the building blocks only check structure there. Called
directly by a user (switch on), every building block still checks values.

Integer hyper-parameters (``k``, ``ks``) must be Python / NumPy integers: ``k=2.7`` or ``k=True`` is
an error, not a silent ``2`` or ``1``.

Layout: :mod:`~graphneg.validation.core` (the switch; embeddings, labels, batches, integer sizes),
:mod:`~graphneg.validation.arguments` (hyper-parameters and other constructor arguments),
:mod:`~graphneg.validation.inputs` (tensor inputs of layers, losses, samplers, augmentations); every
name is importable from ``graphneg.validation``.
"""
from graphneg.validation.arguments import *  # noqa: F401,F403
from graphneg.validation.arguments import __all__ as _arguments_all
from graphneg.validation.core import *  # noqa: F401,F403
from graphneg.validation.core import __all__ as _core_all
from graphneg.validation.inputs import *  # noqa: F401,F403
from graphneg.validation.inputs import __all__ as _inputs_all

__all__ = [*_core_all, *_arguments_all, *_inputs_all]
