"""runner/featurevis's regularizers and redirected ReLU gradient: known answers (the total variation of
a constant image and of a checkerboard, the L1 gradient's sign, the blur of an impulse, the redirected
gradient on hand-made cases) and a property each (TV scales with contrast, a blur step smooths, a live
ReLU keeps its true gradient, a dead filter climbs only when redirected)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from runner.featurevis import objectives, params, regularizers, steps
from runner.featurevis.engine import Recipe, climber
from runner.featurevis.redirect import redirected_clone, redirected_gradient
from runner.featurevis.target import target_model


def checkerboard(size: int = 6, low: float = 0.0, high: float = 255.0) -> np.ndarray:
    x = np.arange(size)
    board = np.where((x[:, None] + x[None, :]) % 2, high, low).astype(np.float32)
    return np.repeat(board[None, ..., None], 3, axis=-1)


def test_total_variation_is_zero_on_a_constant_image_and_two_on_a_full_contrast_checkerboard():
    flat = np.full((1, 6, 6, 3), 90.0, np.float32)
    penalty = regularizers.total_variation()
    np.testing.assert_allclose(penalty(tf.constant(flat)), [0.0], atol=1e-7)
    np.testing.assert_allclose(penalty(tf.constant(checkerboard())), [2.0], rtol=1e-6)
    # property: it does not see the brightness, and grows linearly with the contrast
    half = checkerboard(low=100.0, high=100.0 + 127.5)
    np.testing.assert_allclose(penalty(tf.constant(half)), [1.0], rtol=1e-6)


def test_l1_pulls_each_pixel_toward_gray():
    image = tf.constant(np.array([0.0, 127.5, 255.0, 200.0], np.float32).reshape(1, 2, 2, 1))
    with tf.GradientTape() as tape:
        tape.watch(image)
        penalty = regularizers.l1()(image)
    np.testing.assert_allclose(penalty, [(0.5 + 0 + 0.5 + (200 / 255 - 0.5)) / 4], rtol=1e-6)
    gradient = np.sign(tape.gradient(penalty, image).numpy().ravel())
    # the ascent subtracts the penalty: dark pixels are pushed up, bright ones down, gray left (|x| at 0)
    assert list(gradient) == [-1.0, 0.0, 1.0, 1.0]


def test_blur_spreads_an_impulse_by_lucids_kernel_keeps_its_sum_and_leaves_a_constant_image():
    impulse = np.zeros((1, 7, 7, 1), np.float32)
    impulse[0, 3, 3, 0] = 1.0
    spread = regularizers.blurred(tf.constant(impulse)).numpy()[0, ..., 0]
    np.testing.assert_allclose(spread[2:5, 2:5], regularizers.BLUR_KERNEL / 5.0, rtol=1e-6)
    assert spread.sum() == pytest.approx(1.0)  # the mean is kept (away from the border)
    flat = np.full((1, 5, 5, 3), 0.3, np.float32)
    np.testing.assert_allclose(regularizers.blurred(tf.constant(flat)), flat, rtol=1e-6)  # borders not darkened
    np.testing.assert_allclose(regularizers.blur()(tf.constant(flat * 255)), [0.0], atol=1e-9)


def test_a_step_against_the_blur_penalty_smooths_the_image():
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (2, 12, 12, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(image)
        penalty = tf.reduce_sum(regularizers.blur()(image))
    stepped = image - 2e5 * tape.gradient(penalty, image)
    tv = regularizers.total_variation()
    assert np.all(tv(stepped).numpy() < tv(image).numpy())


def test_regularizers_add_with_weights_and_zero_weights_leave_them_out():
    image = tf.constant(checkerboard())
    both = regularizers.weighted([(0.5, regularizers.total_variation()), (2.0, regularizers.l1())])
    np.testing.assert_allclose(both(image), [0.5 * 2.0 + 2.0 * 0.5], rtol=1e-6)
    assert regularizers.weighted([(0.0, regularizers.blur())]) is None


def test_the_redirected_gradient_on_hand_made_cases():
    x = tf.constant([[-1.0, -2.0, 3.0], [-1.0, 2.0, 7.0]])
    y = tf.clip_by_value(x, 0.0, 6.0)  # a ReLU6
    dy = tf.constant([[1.0, -1.0, 1.0], [1.0, -1.0, 1.0]])
    passed = tf.constant([[0.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # image 0: nothing passed the ReLU
    result = redirected_gradient(x, y, passed, dy).numpy()
    # image 0: dy passes, except where it would push -2 lower; image 1 keeps its true gradient
    np.testing.assert_array_equal(result, [[1.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    above = redirected_gradient(tf.constant([[7.0, 7.0]]), tf.constant([[6.0, 6.0]]), tf.zeros((1, 2)),
                                tf.constant([[1.0, -1.0]])).numpy()
    np.testing.assert_array_equal(above, [[0.0, -1.0]])  # above a ReLU6's ceiling: not pushed higher


def dead_and_live_convnet() -> keras.Model:
    """conv (2 filters, folded ReLU): filter 0 is off on every image (bias -1000), filter 1 on."""
    inputs = keras.Input((6, 6, 3))
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[..., 0], kernel[..., 1] = 0.01, 0.02
    conv = keras.layers.Conv2D(2, 3, activation="relu", name="conv",
                               kernel_initializer=keras.initializers.Constant(kernel),
                               bias_initializer=keras.initializers.Constant([-1000.0, 0.0]))
    return keras.Model(inputs, conv(inputs))


def input_gradient(model, images):
    images = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        objective = tf.reduce_sum(objectives.channel()(model(images)))
    return tape.gradient(objective, images).numpy()


def test_the_redirected_relu_passes_a_gradient_where_the_relu_gives_none_and_keeps_a_live_ones():
    images = np.random.default_rng(1).uniform(100, 150, (2, 6, 6, 3)).astype(np.float32)
    network = dead_and_live_convnet()
    target = target_model(network, "conv", [0, 1])  # image 0: the dead filter, image 1: the live one
    plain, redirected = input_gradient(target, images), input_gradient(redirected_clone(target), images)

    assert np.all(plain[0] == 0)  # a dead start: no gradient at all
    assert np.all(redirected[0] >= 0) and redirected[0].max() > 0  # toward what raises the filter
    np.testing.assert_allclose(redirected[1], plain[1], rtol=1e-6)  # a live filter: its own gradient
    np.testing.assert_allclose(redirected_clone(target)(images), target(images), rtol=1e-6)  # same forward


def test_a_dead_filter_climbs_only_with_the_redirected_steps():
    target = target_model(dead_and_live_convnet(), "conv", [0])
    np.random.seed(2)
    start = params.gray_start(1, 6, 3)
    recipe = dict(objective=objectives.channel(), param=params.Pixels("gray"),
                  step_rule=steps.NormalizedAscent(5000.0, "rms"), steps=6)
    _, plain = (t.numpy() for t in climber(target, Recipe(**recipe))(start, 0))
    images, redirected = (t.numpy() for t in climber(target, Recipe(**recipe, redirected_relu_steps=3))(start, 0))

    assert np.ptp(plain) == 0  # dead: the objective never moved
    assert redirected[0, -1] > 0 and np.all(images >= start)  # brought to life, every pixel brightened


def test_a_regularized_climb_records_the_objective_alone_and_ends_smoother():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(1, 3, name="conv", kernel_initializer=keras.initializers.RandomNormal(seed=3))
    target = target_model(keras.Model(inputs, conv(inputs)), "conv", [0])
    np.random.seed(4)
    start = params.gray_start(1, 8, 3)
    base = dict(objective=objectives.channel(), param=params.Pixels("gray"),
                step_rule=steps.NormalizedAscent(4.0, "rms"), steps=8)
    plain_images, plain = (t.numpy() for t in climber(target, Recipe(**base))(start, 0))
    smooth_images, smooth = (t.numpy() for t in climber(target, Recipe(
        **base, regularizer=regularizers.weighted([(50.0, regularizers.total_variation())])))(start, 0))

    np.testing.assert_allclose(smooth[0, 0], plain[0, 0], rtol=1e-6)  # the same objective, penalty left out
    tv = regularizers.total_variation()
    assert float(tv(tf.constant(smooth_images))[0]) < float(tv(tf.constant(plain_images))[0])
