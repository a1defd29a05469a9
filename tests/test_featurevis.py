"""runner/featurevis's regularizers and redirected ReLU gradient: known answers (the total variation of
a constant image and of a checkerboard, the L1 gradient's sign, the blur of an impulse, the redirected
gradient on hand-made cases) and a property each (TV scales with contrast, a blur step smooths, a live
ReLU keeps its true gradient, a dead filter climbs only when redirected)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from runner.explain.surgery import folded_batch_norms
from runner.featurevis import objectives, params, regularizers, steps, transforms
from runner.featurevis.engine import Recipe, activations_in_chunks, climber
from runner.featurevis.redirect import redirected_clone, redirected_gradient
from runner.featurevis.target import at_input_size, target_model
from runner.models.mobilenet_v2 import build_mobilenet_v2


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
        objective = tf.reduce_sum(objectives.Channel()(model(images)))
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
    recipe = dict(objective=objectives.Channel(), param=params.Pixels("gray"),
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
    base = dict(objective=objectives.Channel(), param=params.Pixels("gray"),
                step_rule=steps.NormalizedAscent(4.0, "rms"), steps=8)
    plain_images, plain = (t.numpy() for t in climber(target, Recipe(**base))(start, 0))
    smooth_images, smooth = (t.numpy() for t in climber(target, Recipe(
        **base, regularizer=regularizers.weighted([(50.0, regularizers.total_variation())])))(start, 0))

    np.testing.assert_allclose(smooth[0, 0], plain[0, 0], rtol=1e-6)  # the same objective, penalty left out
    tv = regularizers.total_variation()
    assert float(tv(tf.constant(smooth_images))[0]) < float(tv(tf.constant(plain_images))[0])


def test_a_climb_in_chunks_of_the_batch_is_the_same_climb():
    """The model run a few images at a time (lucid's ``task.chunk``) gives the same activations, and the same
    climb even for an objective over the whole batch (diversity), with a remainder chunk (5 = 2 + 2 + 1)."""
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv", activation="relu",
                               kernel_initializer=keras.initializers.RandomNormal(seed=5))
    target = target_model(keras.Model(inputs, conv(inputs)), "conv", [0, 1, 2, 3, 0], preactivation=True)
    images = tf.constant(np.random.default_rng(6).uniform(0, 255, (5, 8, 8, 3)).astype(np.float32))
    np.testing.assert_allclose(activations_in_chunks(target, images, 2), target(images), rtol=1e-5, atol=1e-4)

    np.random.seed(7)
    start = params.gray_start(5, 8, 3) + np.random.default_rng(8).normal(0, 5, (5, 8, 8, 3)).astype(np.float32)
    objective = objectives.weighted_sum([(1.0, objectives.Channel()), (0.5, objectives.Diversity())])
    recipe = dict(objective=objective, param=params.Pixels("gray"), step_rule=steps.Adam(0.05), steps=5)
    whole_images, whole = (t.numpy() for t in climber(target, Recipe(**recipe))(start, 0))
    chunked_images, chunked = (t.numpy() for t in climber(target, Recipe(**recipe, chunk=2))(start, 0))
    assert np.ptp(whole[:, -1] - whole[:, 0]) > 0  # it climbed
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(chunked_images, whole_images, rtol=1e-4, atol=1e-2)


# ------------------------------------------------------------------------------- the config groups

PIECE_GROUPS = {"objective": objectives, "param": params, "transforms": transforms, "step": steps}


def composed_task(*overrides: str):
    from hydra.utils import instantiate

    from tests.conftest import compose_config

    return instantiate(compose_config(["task=filters", *overrides]).task).keywords


@pytest.mark.parametrize("group", sorted(PIECE_GROUPS))
def test_every_piece_option_has_a_schema_and_back(group):
    from runner.schema import SCHEMAS
    from tests.conftest import config_options

    assert config_options(f"task/{group}") == sorted(SCHEMAS[f"task/{group}"])


@pytest.mark.parametrize("group, option", [(g, o) for g in sorted(PIECE_GROUPS) for o in
                                           ({"objective": ["channel", "neuron", "layer"], "param": ["pixel", "fourier"],
                                             "transforms": ["none", "standard"], "step": ["ascent", "adam"]}[g])])
def test_every_piece_option_composes_on_top_of_a_recipe_into_its_piece(group, option):
    piece = composed_task("task/recipe=lucid", f"task/{group}={option}")[group]  # lucid swaps every piece
    assert type(piece).__module__ == PIECE_GROUPS[group].__name__


def test_the_recipes_compose_into_their_pieces():
    book = composed_task()
    assert (book["objective"], book["param"], book["step"]) == (
        objectives.Channel(0), params.Pixels("book"), steps.NormalizedAscent(1.0, "rms"))
    assert book["transforms"].or_none() is None and book["regularizers"] is None and book["steps"] == 40
    keras_io = composed_task("task/recipe=keras_io")
    assert (keras_io["objective"], keras_io["param"], keras_io["step"]) == (
        objectives.Channel(2), params.Pixels("keras_io"), steps.NormalizedAscent(1275.0, "l2"))
    lucid = composed_task("task/recipe=lucid")
    assert (lucid["param"], lucid["step"], lucid["preactivation"], lucid["steps"]) == (
        params.Fourier(decorrelate=True), steps.Adam(0.05), True, 512)
    assert lucid["transforms"].size_change() == transforms.Standard().size_change() and lucid["transforms"].rotate == 10
    weighted = composed_task("task/recipe=lucid", "task.regularizers.total_variation_weight=0.5",
                             "task.redirected_relu_steps=16")
    assert callable(weighted["regularizers"]) and weighted["redirected_relu_steps"] == 16


@pytest.mark.parametrize("override, message", [
    ("task/step=adamm", "Available options in 'task/step'"),
    ("task/param=fourrier", "Available options in 'task/param'"),
    ("task.step.learning_rat=1", "Key 'learning_rat' not in"),
    ("task.param.start=zeros", "Invalid value 'zeros', expected one of [book, gray, keras_io]"),
    ("task.init=gray", "Key 'init' not in 'FiltersConfig'"),  # the flat keys before the groups
])
def test_a_typo_in_a_piece_fails_at_compose_with_hydras_choices(override, message):
    from hydra.errors import ConfigCompositionException

    from tests.conftest import compose_config

    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["task=filters", "task/recipe=lucid" if "step" in override else "task/recipe=book", override])
    assert message in str(error.value) + str(error.value.__cause__)


def test_a_piece_value_out_of_range_is_refused_before_the_run():
    from runner.validation import ConfigError, check_config
    from tests.conftest import compose_config

    with pytest.raises(ConfigError, match=r"task.step.learning_rate=0.0 must be > 0"):
        check_config(compose_config(["task=filters", "task/recipe=lucid", "task.step.learning_rate=0"]))
    with pytest.raises(ConfigError, match=r"task.regularizers.blur_weight=-1.0 must be >= 0"):
        check_config(compose_config(["task=filters", "task.regularizers.blur_weight=-1"]))


def test_a_model_fixed_to_one_size_is_visualized_at_another_with_its_own_weights():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(2, 3, activation="relu", name="conv",
                               kernel_initializer=keras.initializers.RandomNormal(seed=5))
    pooled = keras.layers.GlobalAveragePooling2D()(conv(inputs))
    network = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    resized = at_input_size(network, 12)
    images = np.random.default_rng(6).uniform(0, 255, (1, 12, 12, 3)).astype(np.float32)

    assert resized.input_shape[1:3] == (12, 12)
    np.testing.assert_allclose(target_model(resized, "conv", [1])(images), conv(images)[..., 1:], rtol=1e-4, atol=1e-4)
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(conv(inputs))))
    with pytest.raises(ValueError):  # a Dense after a Flatten: its kernel depends on the size
        at_input_size(flat, 12)


def _with_batch_norm_statistics(model: keras.Model, seed: int = 0) -> keras.Model:
    """``model`` with random, non-trivial batch-norm weights and moving statistics (a fresh one's are 1 and 0)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in layer.weights:
                low, high = (0.5, 2.0) if variable.name in ("gamma", "moving_variance") else (-1.0, 1.0)
                variable.assign(rng.uniform(low, high, variable.shape).astype("float32"))
    return model


def _conv_norm_model() -> keras.Model:
    """Conv (with bias) -> BN -> ReLU6, depthwise (multiplier 2) -> BN without scale and centre, a conv
    whose output a BN and an Add both read (not foldable), and a conv with a ReLU before its BN (not foldable)."""
    inputs = keras.Input((9, 9, 3))
    x = layers.Conv2D(4, 3, padding="same", bias_initializer="random_normal", name="conv_a")(inputs)
    x = layers.ReLU(6.0)(layers.BatchNormalization(name="bn_a")(x))
    x = layers.BatchNormalization(scale=False, center=False, name="bn_b")(
        layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False, name="depthwise_b")(x))
    shared = layers.Conv2D(8, 1, use_bias=False, name="conv_c")(x)
    x = layers.Add()([layers.BatchNormalization(name="bn_c")(shared), shared])
    x = layers.BatchNormalization(name="bn_d")(layers.Conv2D(5, 1, activation="relu", name="conv_d")(x))
    return _with_batch_norm_statistics(keras.Model(inputs, x))


def test_folding_batch_norms_keeps_the_function_and_its_input_gradient_in_inference_mode():
    model = _conv_norm_model()
    folded = folded_batch_norms(model)
    images = tf.constant(np.random.default_rng(1).normal(size=(2, 9, 9, 3)).astype("float32"))

    def output_and_gradient(network):
        with tf.GradientTape() as tape:
            tape.watch(images)
            output = network(images, training=False)
            total = tf.reduce_sum(output * tf.range(1.0, 1.0 + output.shape[-1]))
        return output.numpy(), tape.gradient(total, images).numpy()

    (expected, expected_gradient), (got, got_gradient) = output_and_gradient(model), output_and_gradient(folded)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_gradient, expected_gradient, rtol=1e-4, atol=1e-5)


def test_only_a_batch_norm_right_after_a_linear_convolution_read_by_nothing_else_is_folded():
    model = _conv_norm_model()
    folded = folded_batch_norms(model)
    norms = {layer.name for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert norms == {"bn_c", "bn_d"}  # conv_c's output is also read by the Add; conv_d has a ReLU first
    assert {"bn_a", "bn_b"} <= {layer.name for layer in folded.layers}  # their places keep their names
    assert folded.get_layer("conv_c") is model.get_layer("conv_c")  # the rest is shared, not copied
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 4  # untouched
    inputs = keras.Input((5, 5, 1))
    plain = keras.Model(inputs, layers.Conv2D(2, 3)(inputs))
    assert folded_batch_norms(plain) is plain


def test_a_mobilenet_target_climbs_through_folded_batch_norms_to_the_same_activations():
    network = _with_batch_norm_statistics(build_mobilenet_v2(), seed=2)  # the replica, random weights
    network = at_input_size(network, 32)
    target = target_model(network, "block_2_expand_relu", [0, 5, 7], preactivation=True)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in target.layers)
    reference = keras.Model(network.inputs[0], network.get_layer("block_2_expand_BN").output)
    images = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(target(images, training=False).numpy(),
                               reference(images, training=False).numpy()[..., [0, 5, 7]], rtol=1e-4, atol=1e-4)
