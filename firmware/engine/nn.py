# Interpreter of the board's quantized neural models (the format host/nnconvert.py writes from a QDQ ONNX graph).
# MicroPython and CPython subset; an inference allocates nothing: buffers are made once at load.
#
# Integer-only inference (Jacob et al. 2018, CVPR): per layer
#     acc = b_k + sum_j (x_j - zp_x) * W_kj                  int8 x int8 -> int, |acc| <= acc_bound < 2**30
#     y_k = clamp(round(acc * M / 2**S) + zp_y, lo, 127)     lo = zp_y after a ReLU, -128 otherwise
# round(acc * M / 2**S) is formed without acc * M (which may pass 2**30, a heap integer on a 32-bit board):
# acc = h * 2**L + l, then (h * M + ((l * M + 2**(S-1)) >> L)) >> (S - L), exact (host/nnconvert.py checks every
# intermediate against +-2**30). Fixed-point, not float: a float operation allocates on this port.

import binascii
from array import array


def _int8(raw):
    out = array("b", bytes(len(raw)))
    for i in range(len(raw)):
        v = raw[i]
        out[i] = v - 256 if v > 127 else v
    return out


class Mlp:
    def __init__(self, board):
        """board: the dict of a board model file (json.load of models/nn/*.board.json)."""
        if board.get("format") != "soxbms-nn-board" or board.get("version") != 1:
            raise ValueError("not a soxbms-nn-board v1 model")
        spec_in, spec_out = board["input"], board["output"]
        self.n_in = spec_in["size"]
        self.in_zero_point = spec_in["zero_point"]
        self.n_out = spec_out["size"]
        self.out_zero_point = spec_out["zero_point"]
        self.unit_multiplier = spec_out["unit_multiplier"]
        self.unit_shift = spec_out["unit_shift"]
        self.x = array("h", bytes(2 * self.n_in))  # input codes minus their zero point
        self.out = array("b", bytes(self.n_out))  # output codes
        self.layers = []
        last = len(board["layers"]) - 1
        n_prev = self.n_in
        for k, layer in enumerate(board["layers"]):
            n_in, n_out = layer["n_in"], layer["n_out"]
            if n_in != n_prev or len(layer["bias"]) != n_out:
                raise ValueError("layer %d: sizes do not chain" % k)
            weights = _int8(binascii.a2b_base64(layer["weights_b64"]))
            if len(weights) != n_in * n_out:
                raise ValueError("layer %d: %d weights, expected %d" % (k, len(weights), n_in * n_out))
            split = layer["split"]
            dest = self.out if k == last else array("h", bytes(2 * n_out))
            self.layers.append((weights, array("i", layer["bias"]), n_in, n_out, layer["out_zero_point"],
                                layer["lo"], layer["multiplier"], split, (1 << split) - 1, 1 << (layer["shift"] - 1),
                                layer["shift"] - split, dest, k == last))
            n_prev = n_out
        if n_prev != self.n_out:
            raise ValueError("output size does not match the last layer")

    def run(self, codes):
        """Infer from n_in int8 input codes; the n_out output codes are in self.out."""
        x = self.x
        zp = self.in_zero_point
        for j in range(self.n_in):
            x[j] = codes[j] - zp
        for layer in self.layers:
            w, b, n_in, n_out, zp_y, lo, mult, split, mask, half, rshift, dest, last = layer
            base = 0
            for k in range(n_out):
                acc = b[k]
                for j in range(n_in):
                    acc += x[j] * w[base + j]
                base += n_in
                y = (((acc >> split) * mult + (((acc & mask) * mult + half) >> split)) >> rshift) + zp_y
                if y < lo:
                    y = lo
                elif y > 127:
                    y = 127
                dest[k] = y if last else y - zp_y
            x = dest
        return self.out

    def value(self, k):
        """Output k in units of 1/unit_scale (1e-4 of the model's unit, e.g. SoC 0..10000), rounded half up."""
        return ((self.out[k] - self.out_zero_point) * self.unit_multiplier + (1 << (self.unit_shift - 1))) \
            >> self.unit_shift
