"""Feature visualization: an input that maximizes a unit of a network, found by a compiled ascent.

One engine (``engine.climber``), four small pieces that compose (Olah et al., "Feature Visualization",
Distill 2017; Lucid / lucent's ``optvis``):

* an **objective** (``objectives``): what each image of the batch maximizes, from the target's output;
* a **parameterization** (``params``): the variables the ascent moves, and how they become pixels;
* **transforms** (``transforms``): random, differentiable changes of the pixels at every step, so only
  patterns robust to them survive;
* a **step rule** (``steps``): how the gradient moves the variables.

``target`` cuts the network at the layer (only the requested channels, optionally before the ReLU), and
``quality`` measures the result. Every filter of a layer climbs in one batch, in one ``tf.function``:
image i maximizes filter i, and with the per-image objectives the images stay independent.
"""
