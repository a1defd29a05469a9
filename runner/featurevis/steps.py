"""Step rules: how an ascent moves its variables along the objective's gradient.

A rule has ``initial_state(variables) -> tuple`` and ``update(variables, grads, state, step) ->
(variables, state)``; the state is a tuple of tensors, carried through the compiled loop (no
``tf.Variable``, so one traced climb serves any batch it is called on). Everything is per element or per
image, so batch items never mix.
"""

from __future__ import annotations

from dataclasses import dataclass


def rms_normalized(grads):
    """The book's ``grads /= (K.sqrt(K.mean(K.square(grads))) + 1e-5)``, per image."""
    import tensorflow as tf

    axes = list(range(1, len(grads.shape)))
    return grads / (tf.sqrt(tf.reduce_mean(tf.square(grads), axis=axes, keepdims=True)) + 1e-5)


def l2_normalized(grads):
    """keras.io's ``tf.math.l2_normalize(grads)``, per image."""
    import tensorflow as tf

    return tf.math.l2_normalize(grads, axis=list(range(1, len(grads.shape))))


NORMALIZATIONS = {"rms": rms_normalized, "l2": l2_normalized}


@dataclass(frozen=True)
class NormalizedAscent:
    """``variables += step_size * normalize(grads)`` (the book: rms, step 1; keras.io: l2)."""

    step_size: float = 1.0
    normalization: str = "rms"

    def initial_state(self, variables) -> tuple:
        return ()

    def update(self, variables, grads, state, step):
        return variables + self.step_size * NORMALIZATIONS[self.normalization](grads), state


@dataclass(frozen=True)
class Adam:
    """Adam ascent, the update of ``keras.optimizers.Adam`` (and Lucid's TF1 Adam) on ``-objective``:
    ``m, v`` running moments, ``variables += lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``.
    Written out so its moments are loop tensors of the one compiled climb."""

    learning_rate: float = 0.05
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8

    def initial_state(self, variables) -> tuple:
        import tensorflow as tf

        return tf.zeros_like(variables), tf.zeros_like(variables)

    def update(self, variables, grads, state, step):
        import tensorflow as tf

        first, second = state
        t = tf.cast(step + 1, tf.float32)
        first = first + (grads - first) * (1 - self.beta_1)
        second = second + (tf.square(grads) - second) * (1 - self.beta_2)
        rate = self.learning_rate * tf.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)
        return variables + rate * first / (tf.sqrt(second) + self.epsilon), (first, second)
