"""Task `filters` and its engine (runner/featurevis): the pieces on cases whose answer is known (the
Fourier image is NumPy's inverse FFT of the scaled spectrum, the colour mix inverts, transforms are the
identity at zero, a linear filter's optimum is reached), the ascent's batch items independent, the
book's recipe unchanged, dead filters reported, bad input explained, and one real CLI run in MLflow."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import keras
import mlflow
import numpy as np
import pytest
import tensorflow as tf

from runner.errors import ConvlabError
from runner.featurevis import objectives, params, quality, steps, transforms
from runner.featurevis.engine import Recipe, climber
from runner.featurevis.target import map_size, smallest_input_side, target_model
from runner.models.base import ModelSpec
from runner.mlflow_images import image_timelines
from runner.models.vgg16_hed import VGG16Hed
from tasks import filters
from tests.conftest import all_runs

TASK_DEFAULTS = dict(layers=["conv"], filters=None, num_filters=3, image_size=8, steps=4,
                     objective=objectives.Channel(), param=params.Pixels("book"),
                     transforms=transforms.Standard(0, 0, None, 0.0, 0), step=steps.NormalizedAscent(1.0, "rms"),
                     deprocess_std=0.1, deprocess_crop=0, grid_columns=8, margin=5)
LUCID = dict(objective=objectives.Channel(), preactivation=True, param=params.Fourier(decorrelate=True),
             step=steps.Adam(0.05), transforms=transforms.Standard(2, 2, (0.9, 1.1), 10.0, 2), deprocess_std=None)
BOOK_RECIPE = dict(param=params.Pixels("book"), step_rule=steps.NormalizedAscent(1.0, "rms"))


class ToySpec(ModelSpec):
    """8x8 input -> conv (3 filters: 0 and 2 respond to brightness, 1 to darkness, but its bias -1 keeps it
    below 0 on any image, so 0 after its ReLU) -> pool
    (6x6 -> 1x1) -> flatten -> dense. Its size is fixed: it cannot be rebuilt at another."""

    name = "toy"

    def build(self, input_shape=None, num_classes=None) -> keras.Model:
        if input_shape is not None:
            raise ConvlabError("toy has a fixed input size")
        inputs = keras.Input((8, 8, 3), name="image")
        kernel = np.zeros((3, 3, 3, 3), np.float32)
        kernel[..., 0], kernel[..., 1], kernel[..., 2] = 0.01, -0.001, 0.02
        x = keras.layers.Conv2D(3, 3, activation="relu", name="conv", kernel_initializer=keras.initializers.Constant(
            kernel), bias_initializer=keras.initializers.Constant([0.0, -1.0, 0.0]))(inputs)
        x = keras.layers.MaxPooling2D(6, name="pool")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        return keras.Model(inputs, keras.layers.Dense(2, name="dense")(x), name=self.name)


def random_convnet(size=None) -> keras.Model:
    """Two random 3x3 convolutions, a separate ReLU between them; any input size."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(6, 3, name="conv_a")(x)
    x = keras.layers.ReLU(name="relu_a")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_b")(x)
    return keras.Model(inputs, x, name="random")


@pytest.fixture(scope="module")
def hed() -> keras.Model:
    return VGG16Hed().build()


def climb(network, layer: str, indices: list[int], start: np.ndarray, steps_: int, **recipe):
    target = target_model(network, layer, indices)
    ascent = climber(target, Recipe(objective=objectives.Channel(), steps=steps_, **{**BOOK_RECIPE, **recipe}))
    return tuple(tensor.numpy() for tensor in ascent(start, 0))


# ---------------------------------------------------------------------------------- the book's ascent


def test_the_loss_of_a_known_filter_rises_at_every_step(hed):
    np.random.seed(0)
    _, losses = climb(hed, "block1_conv1", [0], params.book_start(1, 32, 3), steps_=5)

    assert losses.shape == (1, 5)
    assert np.all(np.diff(losses[0]) > 0), losses
    assert losses[0, -1] > 1.2 * losses[0, 0]


def test_each_image_of_a_batch_climbs_as_if_its_filter_were_alone(hed):
    np.random.seed(1)
    start = params.book_start(3, 24, 3)
    batch_images, batch_losses = climb(hed, "block1_conv2", [8, 2, 14], start, steps_=3)
    alone_images, alone_losses = climb(hed, "block1_conv2", [2], start[1:2], steps_=3)

    assert np.all(batch_losses > 0)  # live filters, so the images really moved
    assert np.abs(batch_images[1] - start[1]).max() > 1.0
    np.testing.assert_allclose(batch_images[1], alone_images[0], rtol=1e-5)
    np.testing.assert_allclose(batch_losses[1], alone_losses[0], rtol=1e-4)


def test_the_book_recipe_is_the_books_loop_written_out(hed):
    """40 RMS-normalized steps of 1 on the pixels, loss before each step: the book's loop, in NumPy's order."""
    np.random.seed(2)
    start = params.book_start(1, 16, 3)
    images, losses = climb(hed, "block1_conv1", [5], start, steps_=3)
    truncated = target_model(hed, "block1_conv1", [5])
    image, expected = tf.constant(start), []
    for _ in range(3):
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = tf.reduce_mean(truncated(image)[..., 0])
        grads = tape.gradient(loss, image)
        image += grads / (tf.sqrt(tf.reduce_mean(tf.square(grads))) + 1e-5)
        expected.append(float(loss))
    np.testing.assert_allclose(losses[0], expected, rtol=1e-5)
    np.testing.assert_allclose(images, image.numpy(), rtol=1e-5)


@pytest.mark.parametrize("layer, convolution_computes", [("block2_conv1", 3), ("block2_pool", None)])
def test_the_target_gives_the_requested_channels_in_order(hed, layer, convolution_computes):
    """A Conv2D target computes only the requested channels; any other layer is computed whole and its
    channels taken. Either way channel i is the i-th requested filter of the full layer."""
    requested = [100, 3, 57]
    truncated = target_model(hed, layer, requested)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    full = keras.Model(hed.inputs, hed.get_layer(layer).output).predict(images, verbose=0)

    np.testing.assert_allclose(truncated.predict(images, verbose=0), full[..., requested], rtol=1e-4, atol=1e-3)
    computed = {lay.name: lay.filters for lay in truncated.layers if isinstance(lay, keras.layers.Conv2D)}
    if convolution_computes:
        assert computed[layer] == convolution_computes  # and the whole block2_conv1 is not in the model
        assert computed.keys() == {"preprocess_bgr_mean", "block1_conv1", "block1_conv2", "block2_conv1"}
    else:
        assert computed == {name: hed.get_layer(name).filters for name in computed}  # every conv whole
        assert computed.keys() == {"preprocess_bgr_mean", "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"}


def test_the_book_init_is_its_caffe_start_as_pixels_and_keras_io_its_start_in_minus_one_one_space():
    np.random.seed(2)
    book = params.book_start(2, 16, 3)
    caffe_bgr = book[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)  # what VGG16 sees
    assert 128 <= caffe_bgr.min() and caffe_bgr.max() <= 148

    keras_io = params.keras_io_start(2, 16, 3) / 127.5 - 1  # ResNet50V2's preprocessing
    assert -0.125 <= keras_io.min() and keras_io.max() <= 0.125

    gray = params.gray_start(2, 16, 3)  # plain-pixel models: a gray image with a little noise
    assert 128 <= gray.min() and gray.max() <= 148 and gray.std() > 1


# ----------------------------------------------------------------------------------------- the pieces


def test_the_fourier_image_is_numpys_inverse_fft_of_the_1_over_f_scaled_spectrum_through_a_sigmoid():
    for size in (8, 7):  # even and odd
        np.random.seed(3)
        variables = params.Fourier(decorrelate=False).initial(2, size, 3) * 50
        scale = params.spectrum_scale(size, size)
        spectrum = (variables[..., 0] + 1j * variables[..., 1]) * scale
        expected = np.fft.irfft2(spectrum, s=(size, size), norm="ortho").transpose(0, 2, 3, 1) / 4
        image = params.Fourier(decorrelate=False).image(tf.constant(variables)).numpy()

        assert image.shape == (2, size, size, 3)
        np.testing.assert_allclose(image, 255 / (1 + np.exp(-expected)), rtol=1e-4, atol=1e-3)


def test_the_spectrum_scale_is_1_over_frequency_floored_at_one_cycle_per_image():
    scale = params.spectrum_scale(16, 16)

    assert scale.shape == (16, 9)
    assert scale[0, 0] == 16 and scale[0, 1] == 16 and scale[1, 0] == 16  # DC and 1 cycle: 1 / (1/16)
    assert scale[0, 8] == pytest.approx(2.0) and scale[0, 4] == pytest.approx(4.0)  # 1/2 and 1/4 cycle/px
    assert scale[3, 4] == pytest.approx(1 / np.hypot(3 / 16, 4 / 16))


def test_colour_decorrelation_inverts_and_gives_imagenets_correlated_colours():
    rng = np.random.default_rng(4)
    white = rng.standard_normal((1, 64, 64, 3)).astype(np.float32)
    rgb = params.decorrelate_colors(tf.constant(white)).numpy()

    np.testing.assert_allclose(rgb @ np.linalg.inv(params.COLOR_CORRELATION.T), white, atol=1e-4)
    covariance = np.cov(rgb.reshape(-1, 3), rowvar=False)
    np.testing.assert_allclose(covariance, params.COLOR_CORRELATION @ params.COLOR_CORRELATION.T, atol=0.03)
    assert np.max(np.linalg.norm(params.COLOR_CORRELATION, axis=0)) == pytest.approx(1.0)
    gray = rng.standard_normal((1, 4, 4, 1)).astype(np.float32)  # one channel: nothing to decorrelate
    np.testing.assert_array_equal(params.decorrelate_colors(tf.constant(gray)).numpy(), gray)


def test_transforms_are_the_identity_at_zero_and_change_the_size_as_lucids():
    images = tf.constant(np.random.default_rng(5).uniform(0, 255, (2, 20, 20, 3)).astype(np.float32))
    seed = tf.constant([1, 2])
    for identity in (transforms.pad(0), transforms.jitter(1), transforms.random_scale(1.0, 1.0),
                     transforms.random_rotate(0.0)):
        np.testing.assert_allclose(identity(images, seed).numpy(), images.numpy(), atol=1e-3)

    standard = transforms.Standard()
    assert standard(images, seed).shape == (2, 20 + transforms.Standard().size_change(), 20 + 14, 3)
    padded = transforms.pad(3)(images, seed).numpy()
    assert padded.shape == (2, 26, 26, 3) and np.all(padded[:, :3] == 127.5)


def test_the_standard_transforms_are_the_pieces_geometric_map_sampled_in_one_warp():
    """Bilinear interpolation of a linear ramp is exact, so Standard's one warp (scale, rotation and final
    jitter together) and the pieces in sequence (two warps and a crop) agree where both sample inside the
    image: the same map, the same draws; without scale and rotation, the same crops exactly."""
    y, x = np.mgrid[0:40, 0:40].astype(np.float32)
    ramp = tf.constant(np.stack([2 * x + y, 80 + x - y, 3 * y], axis=-1)[None].repeat(2, axis=0))
    standard = transforms.Standard(pad=2, jitter=3, scale=(0.9, 1.1), rotate=10.0, final_jitter=3)
    warped = []
    for seed in ([0, 0], [3, 9]):
        one = standard(ramp, tf.constant(seed)).numpy()
        sequence = transforms.compose(standard.pieces())(ramp, tf.constant(seed)).numpy()
        assert one.shape == sequence.shape == (2, 40 + standard.size_change(), 40 + standard.size_change(), 3)
        np.testing.assert_allclose(one[:, 10:-10, 10:-10], sequence[:, 10:-10, 10:-10], atol=1e-2)
        warped.append(one)
    assert np.abs(warped[0] - warped[1]).max() > 1.0  # another seed, another map
    crops = transforms.Standard(pad=2, jitter=3, scale=None, rotate=0.0, final_jitter=3)
    np.testing.assert_array_equal(crops(ramp, tf.constant([3, 9])),
                                  transforms.compose(crops.pieces())(ramp, tf.constant([3, 9])))


def test_the_standard_transforms_sample_a_models_input_size_in_their_own_warp():
    """at_size: Standard resized to a fixed model input in its one warp is Standard followed by
    tf.image.resize (exact on a linear ramp, inside the image); the other transforms are resized after;
    a model that takes any size gets the transforms' own size."""
    y, x = np.mgrid[0:40, 0:40].astype(np.float32)
    ramp = tf.constant(np.stack([2 * x + y, 80 + x - y, 3 * y], axis=-1)[None].repeat(2, axis=0))
    standard = transforms.Standard(pad=2, jitter=3, scale=(0.9, 1.1), rotate=10.0, final_jitter=3)
    seed = tf.constant([3, 9])
    for size in ((30, 30), (34, 26)):
        one_warp = transforms.at_size(standard, ramp, seed, size).numpy()
        resized = tf.image.resize(standard(ramp, seed), size).numpy()
        assert one_warp.shape == (2, *size, 3)
        np.testing.assert_allclose(one_warp[:, 8:-8, 8:-8], resized[:, 8:-8, 8:-8], atol=0.05)
    jittered = transforms.at_size(transforms.jitter(3), ramp, seed, (30, 30)).numpy()
    np.testing.assert_allclose(jittered, tf.image.resize(transforms.jitter(3)(ramp, seed), (30, 30)).numpy())
    assert transforms.at_size(standard, ramp, seed, (None, None)).shape == standard(ramp, seed).shape
    assert transforms.at_size(None, ramp, seed, (40, 40)) is ramp


def test_jitter_is_a_crop_at_an_offset_below_its_size_shared_by_the_batch():
    images = tf.constant(np.arange(2 * 10 * 10, dtype=np.float32).reshape(2, 10, 10, 1))
    cropped = transforms.jitter(4)(images, tf.constant([7, 0])).numpy()

    assert cropped.shape == (2, 7, 7, 1)
    dy, dx = divmod(int(cropped[0, 0, 0, 0]), 10)
    assert 0 <= dy < 4 and 0 <= dx < 4
    np.testing.assert_array_equal(cropped, images.numpy()[:, dy:dy + 7, dx:dx + 7])


def test_rotation_and_zoom_turn_about_the_centre():
    """A 90-degree turn of an odd image maps the centre to itself and a row to a column; a zoom keeps the
    centre pixel."""
    image = np.zeros((1, 9, 9, 1), np.float32)
    image[0, 4, 4:] = 1.0  # the centre and the ray to its right
    turned = transforms.random_rotate(90.0)(tf.constant(image), tf.constant([0, 0]))  # some angle in [-90, 90]
    assert turned.numpy()[0, 4, 4, 0] == pytest.approx(1.0)
    quarter = transforms.scaled_and_rotated(tf.constant(image), tf.constant(1.0), tf.constant(np.pi / 2)).numpy()[0, ..., 0]
    assert quarter[4, 4] == pytest.approx(1.0) and quarter[4, 8] == pytest.approx(0.0, abs=1e-4)
    assert (quarter[8, 4] == pytest.approx(1.0, abs=1e-4)) != (quarter[0, 4] == pytest.approx(1.0, abs=1e-4))
    zoomed = transforms.random_scale(1.5, 1.5)(tf.constant(image), tf.constant([0, 0])).numpy()
    assert zoomed[0, 4, 4, 0] == pytest.approx(1.0)


def test_the_channel_neuron_layer_and_diversity_objectives_on_known_maps():
    activation = np.zeros((2, 3, 3, 2), np.float32)
    activation[0, ..., 0] = np.arange(9).reshape(3, 3)  # image 0's filter is channel 0
    activation[1, ..., 1] = 2.0
    activation[1, 1, 1, 1] = 11.0
    activation = tf.constant(activation)

    np.testing.assert_allclose(objectives.Channel()(activation), [4.0, 3.0])
    np.testing.assert_allclose(objectives.Channel(border=1)(activation), [4.0, 11.0])
    np.testing.assert_allclose(objectives.Neuron()(activation), [4.0, 11.0])
    np.testing.assert_allclose(objectives.Layer()(activation), [np.mean(np.arange(9) ** 2) / 2, (8 * 4 + 121) / 18])
    # image 0 only fires channel 0, image 1 only channel 1: orthogonal Gram matrices, diversity 0
    np.testing.assert_allclose(objectives.Diversity()(activation), [0.0, 0.0], atol=1e-6)
    same = tf.concat([activation[:1], activation[:1]], axis=0)
    np.testing.assert_allclose(objectives.Diversity()(same), [-1.0, -1.0], atol=1e-6)
    both = objectives.weighted_sum([(1.0, objectives.Channel()), (0.5, objectives.Neuron())])(activation)
    np.testing.assert_allclose(both, [6.0, 8.5])


def test_one_ascent_step_of_a_linear_filter_moves_each_pixel_by_its_normalized_weight():
    """mean(w . x) over the map has the gradient w / (H W) at every pixel: the book's step moves every
    pixel by w / rms(w), keras.io's by step * w / (|w| sqrt(H W))."""
    weights = np.array([1.0, -2.0, 0.5], np.float32)
    grads = tf.constant(np.tile(weights / 16, (1, 4, 4, 1)))
    rms = np.sqrt(np.mean((weights / 16) ** 2))
    np.testing.assert_allclose(steps.rms_normalized(grads)[0, 0, 0], weights / 16 / (rms + 1e-5), rtol=1e-5)
    np.testing.assert_allclose(steps.l2_normalized(grads)[0, 0, 0], weights / (np.linalg.norm(weights) * 4), rtol=1e-5)


def test_adam_ascent_is_keras_adam_descending_the_negated_objective():
    target = np.array([3.0, -1.0, 0.5], np.float32)
    rule, ours = steps.Adam(0.05), tf.constant(np.zeros(3, np.float32))
    state = rule.initial_state(ours)
    theirs = keras.Variable(np.zeros(3, np.float32))
    optimizer = keras.optimizers.Adam(0.05, epsilon=1e-8)
    for step in range(5):
        ours, state = rule.update(ours, 2 * (target - ours), state, tf.constant(step))  # ascent on -|x - t|^2
        optimizer.apply_gradients([(tf.constant(-2 * (target - theirs.numpy())), theirs)])
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5)


def test_the_fourier_adam_ascent_reaches_a_linear_filters_known_optimum():
    """A 1x1 convolution with weights (+, -, +) is largest on the image (255, 0, 255), the sigmoid's ends:
    reached by Adam on the Fourier image; with Lucid's decorrelation (its rare colour directions move
    slower) and transforms, approached."""
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(1, 1, use_bias=False, name="linear",
                               kernel_initializer=keras.initializers.Constant([[[[0.01], [-0.01], [0.005]]]]))
    target = target_model(keras.Model(inputs, conv(inputs)), "linear", [0])
    finals = []
    for decorrelate, shift in ((False, None), (True, transforms.Standard(2, 2, (0.9, 1.1), 10, 2))):
        recipe = Recipe(objective=objectives.Channel(), param=params.Fourier(decorrelate=decorrelate),
                        step_rule=steps.Adam(0.05), steps=400, transforms=shift)
        np.random.seed(6)
        images, losses = (t.numpy() for t in climber(target, recipe)(params.Fourier().initial(1, 8, 3), 0))
        finals.append(images[0].mean(axis=(0, 1)))
        assert losses[0, -1] > losses[0, 0] + 0.5

    plain, lucid = finals
    assert plain[0] > 225 and plain[1] < 30 and plain[2] > 225, plain  # the sigmoid nears its ends slowly
    assert lucid[0] > lucid[1] + 100 and lucid[2] > lucid[1] + 50, lucid


def test_the_lucid_recipe_keeps_the_batch_items_independent():
    network = random_convnet()
    recipe = Recipe(objective=objectives.Channel(), param=params.Fourier(), step_rule=steps.Adam(0.05), steps=4,
                    transforms=transforms.Standard(2, 3, (0.9, 1.1), 10, 2))
    np.random.seed(7)
    start = params.Fourier().initial(3, 12, 3)
    batch, _ = climber(target_model(network, "conv_b", [3, 0, 2], preactivation=True), recipe)(start, 5)
    alone, _ = climber(target_model(network, "conv_b", [0], preactivation=True), recipe)(start[1:2], 5)

    assert np.abs(batch.numpy()[1] - params.Fourier().image(tf.constant(start[1:2])).numpy()).max() > 0.1
    np.testing.assert_allclose(batch.numpy()[1], alone.numpy()[0], rtol=1e-4, atol=1e-3)


def test_the_pre_activation_target_is_the_convolution_without_its_relu_or_the_activations_input():
    network = random_convnet(10)
    images = np.random.default_rng(8).uniform(0, 255, (2, 10, 10, 3)).astype(np.float32)
    post = target_model(network, "conv_b", [1, 3])(images).numpy()
    pre = target_model(network, "conv_b", [1, 3], preactivation=True)(images).numpy()
    assert pre.min() < 0
    np.testing.assert_allclose(np.maximum(pre, 0), post, rtol=1e-5, atol=1e-5)

    before_relu = target_model(network, "relu_a", [4], preactivation=True)(images).numpy()
    conv_a = keras.Model(network.inputs, network.get_layer("conv_a").output)(images).numpy()
    np.testing.assert_allclose(before_relu, conv_a[..., [4]], rtol=1e-5, atol=1e-5)


def test_the_map_size_and_the_smallest_input_that_gives_a_map(hed):
    conv = target_model(hed, "block5_conv1", [0])
    assert map_size(conv, 64) == (4, 4) and map_size(conv, 8) is None
    assert smallest_input_side(conv, 1, 8) == 16  # four 2x2 poolings
    assert smallest_input_side(conv, 3, 8) == 48


def test_quality_known_answers_high_frequencies_and_a_response_that_does_not_move():
    x = np.arange(16)
    checkerboard = ((x[:, None] + x[None, :]) % 2 * 255.0)[None, ..., None]
    smooth = (128 + 50 * np.cos(2 * np.pi * x / 16))[None, :, None, None] * np.ones((1, 16, 16, 1))
    np.testing.assert_allclose(quality.high_frequency_energy(np.concatenate([checkerboard, smooth])), [1.0, 0.0],
                               atol=1e-9)

    inputs = keras.Input((16, 16, 1))
    brightness = keras.Model(inputs, keras.layers.AveragePooling2D(16)(inputs))  # one channel: its mean
    flat = np.full((1, 16, 16, 1), 100.0, np.float32)
    np.testing.assert_allclose(quality.robust_activation(brightness, flat), [1.0], rtol=1e-5)
    assert list(quality.dead(np.array([[0.0, 0.0], [0.0, 0.1]]))) == [True, False]


# ---------------------------------------------------------------------------------------- pictures


def book_deprocess_image(x):
    """Verbatim from the book (5.4.2, 1st edition)."""
    x -= x.mean()
    x /= (x.std() + 1e-5)
    x *= 0.1
    x += 0.5
    x = np.clip(x, 0, 1)
    x *= 255
    x = np.clip(x, 0, 255).astype('uint8')
    return x


def keras_io_deprocess_image(img):
    """Verbatim from keras.io "Visualizing what convnets learn"."""
    img -= img.mean()
    img /= img.std() + 1e-5
    img *= 0.15
    img = img[25:-25, 25:-25, :]
    img += 0.5
    img = np.clip(img, 0, 1)
    img *= 255
    img = np.clip(img, 0, 255).astype("uint8")
    return img


def test_deprocessing_is_the_books_and_keras_ios_formula_or_the_pixels_as_they_are():
    image = np.random.default_rng(3).normal(140, 30, (64, 64, 3)).astype(np.float32)

    np.testing.assert_array_equal(filters.deprocess(image, 0.1, 0), book_deprocess_image(image.copy()))
    np.testing.assert_array_equal(filters.deprocess(image, 0.15, 25), keras_io_deprocess_image(image.copy()))
    np.testing.assert_array_equal(filters.deprocess(image, None, 0), np.clip(image, 0, 255).astype(np.uint8))


# -------------------------------------------------------------------------------- the task in MLflow


def test_a_filter_that_is_always_zero_is_counted_and_named_as_dead(tracking, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tasks.filters"), mlflow.start_run() as active:
        filters.run(model=ToySpec(), dataset=None, **TASK_DEFAULTS)

    run_id = active.info.run_id
    client = mlflow.MlflowClient()
    metrics = client.get_run(run_id).data.metrics
    assert metrics["dead_filters/conv"] == 1
    assert {"objective/conv", "activation/conv", "high_frequency_energy/conv", "seconds_per_filter/conv"} <= set(metrics)
    assert "conv: 1 dead filter(s)" in caplog.text and "[1]" in caplog.text
    final_losses = client.get_metric_history(run_id, "filter_loss/conv")
    assert [point.step for point in sorted(final_losses, key=lambda p: p.step)] == [0, 1, 2]
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="filters", dst_path=str(tmp_path)))
    saved = np.load(local / "conv.npz")
    assert saved["losses"].shape == (3, 4) and saved["images"].shape == (3, 8, 8, 3)
    assert np.all(saved["losses"][1] == 0) and np.all(np.diff(saved["losses"][[0, 2]], axis=1) > 0)
    assert saved["patterns"].dtype == np.uint8 and list(saved["filters"]) == [0, 1, 2]
    assert cv2.imread(str(local / "conv.png")).shape == (8, 3 * 8 + 2 * 5, 3)
    assert image_timelines(run_id) == {"filters/conv": [0]}  # the grid as an image chart of the UI


def test_the_lucid_recipe_leaves_no_filter_dead(tracking):
    with mlflow.start_run() as active:
        filters.run(model=ToySpec(), dataset=None, **{**TASK_DEFAULTS, **LUCID, "steps": 6})

    metrics = mlflow.MlflowClient().get_run(active.info.run_id).data.metrics
    assert metrics["dead_filters/conv"] == 0 and metrics["objective/conv"] > -1


@pytest.mark.parametrize("overrides, message", [
    ({"layers": ["nope"]}, "has no layer 'nope'; its layers are: image, conv, pool, flatten, dense"),
    ({"filters": [0, 3]}, "layer 'conv' has 3 filters (0..2); asked for [3]"),
    ({"num_filters": 4}, "layer 'conv' has 3 filters (0..2); asked for [3]"),
    ({"layers": ["dense"]}, "layer 'dense' (Dense) has no channel axis to visualize"),
    ({"layers": ["flatten"]}, "layer 'flatten' (Flatten) has no channel axis to visualize"),
    ({"layers": []}, "task.layers is empty"),
    ({"num_filters": 0}, "no filters to visualize"),
    ({"filters": []}, "no filters to visualize"),
    ({"objective": "neuron"}, "task.objective is 'neuron', not a piece of the task/objective group"),
    ({"steps": 0}, "task.steps=0 must be positive"),
    ({"margin": -1}, "task.margin=-1 must not be negative"),
    ({"deprocess_crop": 4}, "task.deprocess_crop=4 leaves nothing of a 8-px image"),
    ({"objective": objectives.Channel(3)}, "layer 'conv' has a 6x6 map at task.image_size=8 (task.objective.border=3"),
    ({"layers": ["pool"], "objective": objectives.Neuron()}, "layer 'pool' has a 1x1 map at task.image_size=8 (a neuron"),
    ({"layers": ["pool"], "preactivation": True}, "layer 'pool' (MaxPooling2D) has no linear part"),
    ({"filters": [0], "diversity": 0.5}, "task.diversity=0.5 compares the batch's images, and there is one filter"),
    ({"transforms": transforms.Standard(1, 12, None, 0.0, 0)}, "task.transforms.jitter=12 crops more than the 10-px"),
    ({"redirected_relu_steps": -1}, "task.redirected_relu_steps=-1 must not be negative"),
])
def test_bad_input_is_refused_with_its_reason(overrides, message):
    with pytest.raises(ConvlabError) as error:
        filters.run(model=ToySpec(), dataset=None, **{**TASK_DEFAULTS, **overrides})
    assert message in str(error.value)


def test_an_image_too_small_for_the_layer_names_the_smallest_that_works():
    spec = VGG16Hed()
    with pytest.raises(ConvlabError) as error:
        filters.run(model=spec, dataset=None, **{**TASK_DEFAULTS, "layers": ["block5_conv1"], "image_size": 8})
    assert "layer 'block5_conv1' has no map at all at task.image_size=8" in str(error.value)
    assert "task.image_size>=16" in error.value.fix


def test_a_model_fixed_to_another_size_names_the_size_it_takes():
    with pytest.raises(ConvlabError, match=r"toy takes 8x8 inputs, not task.image_size=16(.|\n)*task.image_size=8"):
        filters.run(model=ToySpec(), dataset=None, **{**TASK_DEFAULTS, "image_size": 16})


@pytest.mark.e2e
def test_the_cli_logs_the_grid_the_arrays_and_the_losses_of_each_filter(run_cli, mlflow_client, tmp_path):
    run_cli("task=filters", "model=vgg16_hed", "dataset=photos", "task.layers=[block1_conv1]",
            "task.num_filters=4", "task.steps=3", "task.image_size=32")

    [run] = all_runs(mlflow_client)
    assert run.info.status == "FINISHED"
    run_id = run.info.run_id
    assert {a.path for a in mlflow_client.list_artifacts(run_id, "filters")} == {
        "filters/block1_conv1.png", "filters/block1_conv1.npz"}
    assert sorted(p.step for p in mlflow_client.get_metric_history(run_id, "filter_loss/block1_conv1")) == [0, 1, 2, 3]
    assert run.data.metrics["dead_filters/block1_conv1"] == 0
    local = Path(mlflow_client.download_artifacts(run_id, "filters", str(tmp_path)))
    assert cv2.imread(str(local / "block1_conv1.png")).shape == (32, 4 * 32 + 3 * 5, 3)
    assert np.load(local / "block1_conv1.npz")["losses"].shape == (4, 3)
