"""The preprocessing_fn under TFT's own test harness (``tft_unit``), run by test_preprocessing_fn.py.

Run in a separate interpreter that leaves with ``os._exit``: a process that ran a tf.Transform
analysis crashes while garbage-collecting at exit (see components.preprocess.run_preprocess), and
that must not turn the pytest run's exit code into 139.
"""

import io
import os
import sys
import unittest

import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow_transform.beam import tft_unit
from tensorflow_transform.tf_metadata import dataset_metadata

from components import artifacts
from components import preprocess as pre


def _png(color, size, mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


class PreprocessingFnTest(tft_unit.TransformTestCase):
    def test_decode_resize_scale_and_sorted_vocabulary(self):
        input_data = [
            {"image": _png((255, 0, 0), (8, 8)), "label": b"zebra"},
            {"image": _png(51, (3, 7), mode="L"), "label": b"ant"},
            {"image": _png((0, 0, 255, 0), (5, 5), mode="RGBA"), "label": b"zebra"},
        ]
        metadata = dataset_metadata.DatasetMetadata.from_feature_spec(artifacts.raw_feature_spec())
        red = np.zeros((4, 4, 3), np.float32) - 1.0
        red[..., 0] = 1.0
        gray = np.full((4, 4, 3), 51 / 127.5 - 1.0, np.float32)
        blue = np.zeros((4, 4, 3), np.float32) - 1.0  # alpha is dropped: the RGB underneath stays
        blue[..., 2] = 1.0
        expected = [
            {"image": red, "label": 1},  # "zebra" is the most frequent class, yet sorts after "ant"
            {"image": gray, "label": 0},
            {"image": blue, "label": 1},
        ]
        self.assertAnalyzeAndTransformResults(
            input_data, metadata, pre.make_preprocessing_fn(4, "tf", ["zebra", "ant"]), expected
        )


if __name__ == "__main__":
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    sys.stdout.flush()
    sys.stderr.flush()
    # tft_unit.TransformTestCase also collects its deprecated test_session, which skips itself.
    ran = result.testsRun - len(result.skipped)
    os._exit(0 if result.wasSuccessful() and ran == 1 else 1)
