import numpy as np
import pytest

from components import base_models


@pytest.mark.parametrize(
    "name, family",
    [("mobilenet_v2", "mobilenet_v2"), ("resnet50", "resnet50"), ("resnet50_v2", "resnet_v2"), ("vgg16", "vgg16")],
)
def test_scale_pixels_matches_keras_preprocess_input(name, family):
    import keras
    import tensorflow as tf

    pixels = np.random.default_rng(0).uniform(0, 255, size=(2, 4, 4, 3)).astype("float32")
    expected = getattr(keras.applications, family).preprocess_input(pixels.copy())
    got = base_models.scale_pixels(tf.constant(pixels), base_models.get_spec(name).scaling).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_raw_scaling_keeps_pixels_for_models_with_their_own_rescaling():
    import tensorflow as tf

    pixels = tf.constant([[[[0.0, 128.0, 255.0]]]])
    np.testing.assert_array_equal(base_models.scale_pixels(pixels, "raw").numpy(), pixels.numpy())


def test_unknown_base_model_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"base_model 'mobilenet_v9' is not supported; choose one of: .*mobilenet_v2"):
        base_models.get_spec("mobilenet_v9")


def test_image_size_below_minimum_is_refused():
    with pytest.raises(ValueError, match=r"image_size 16 is below the minimum input size 32 px of base model 'resnet50'"):
        base_models.check_image_size("resnet50", 16)


def test_width_multiplier_only_for_mobilenets():
    with pytest.raises(ValueError, match="width_multiplier 0.5 is only supported by MobileNet"):
        base_models.build_base_model("resnet50", 32, None, 0.5)


def test_mobilenet_v2_base_output_shape_and_batchnorm_momentum():
    base = base_models.build_base_model("mobilenet_v2", 32, None, 0.35)
    assert base.output_shape == (None, 1, 1, 1280)
    count = base_models.set_batchnorm_momentum(base, 0.9)
    assert count == 52
    momenta = {layer.momentum for layer in base.layers if layer.__class__.__name__ == "BatchNormalization"}
    assert momenta == {0.9}
