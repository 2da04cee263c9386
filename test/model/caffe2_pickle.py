"""Writers of the two ImageNet weight files MODEL.WEIGHTS accepts, in their exact on-disk formats, with random
values: detectron2's `R-50.pkl` (a Python-2 pickle of caffe2-named numpy float32 arrays, BN not folded) and
torchvision's `resnet50-*.pth` (a torch.save'd state dict)."""
import struct

import numpy as np
import torch
from torchvision.models import resnet50

R50_BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}  # residual blocks per stage res2..res5


def r50_caffe2_shapes():
    """Every blob of detectron2's ImageNet R-50.pkl with its shape, named and sized from the ResNet-50 design
    (stem conv1 7x7 with a bias, res_conv1_bn, bottlenecks branch2a/2b/2c + branch1 shortcut, fc1000)."""
    shapes = {"conv1_w": (64, 3, 7, 7), "conv1_b": (64,)}
    bn = ("gamma", "beta", "running_mean", "running_var")
    shapes.update({f"res_conv1_bn_{f}": (64,) for f in bn})
    in_ch = 64
    for stage, blocks in R50_BLOCKS.items():
        width = 64 * 2 ** (stage - 2)
        for i in range(blocks):
            convs = {"branch2a": (width, in_ch if i == 0 else 4 * width, 1, 1),
                     "branch2b": (width, width, 3, 3),
                     "branch2c": (4 * width, width, 1, 1)}
            if i == 0:
                convs["branch1"] = (4 * width, in_ch, 1, 1)
            for branch, shape in convs.items():
                shapes[f"res{stage}_{i}_{branch}_w"] = shape
                shapes.update({f"res{stage}_{i}_{branch}_bn_{f}": (shape[0],) for f in bn})
        in_ch = 4 * width
    shapes.update({"fc1000_w": (1000, 2048), "fc1000_b": (1000,)})
    return shapes


def random_r50_arrays(seed=0):
    """Plausible random values, so that activations stay in range as with real weights: He-scaled convs,
    positive variances (the stem's of the order of its 0..255-scale input's), small gammas closing each residual
    branch (else 16 random blocks grow the activations ~10^4-fold)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in r50_caffe2_shapes().items():
        if name.endswith("_w") and len(shape) == 4:
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif name == "res_conv1_bn_running_var":
            value = rng.uniform(0.5, 1.5, shape) * 1e4
        elif name.endswith("_branch2c_bn_gamma"):
            value = rng.uniform(0.05, 0.15, shape)
        elif name.endswith(("_gamma", "running_var")):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.standard_normal(shape) * 0.01
        out[name] = value.astype(np.float32)
    return out


# --- a Python-2 pickle, opcode by opcode (what detectron2's file is: py2 `str` keys and buffers) -------------
def _py2_str(text) -> bytes:
    data = text.encode("latin1") if isinstance(text, str) else bytes(text)
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING
    return b"T" + struct.pack("<I", len(data)) + data  # BINSTRING


def _int(value: int) -> bytes:
    return b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)  # BININT1 / BININT


def _array(a: np.ndarray) -> bytes:
    assert a.dtype == np.float32
    out = b"cnumpy.core.multiarray\n_reconstruct\n"  # GLOBAL, as numpy 1.x under Python 2 writes it
    out += b"cnumpy\nndarray\n" + _int(0) + b"\x85" + _py2_str("b") + b"\x87" + b"R"  # (ndarray, (0,), 'b') REDUCE
    shape = b"(" + b"".join(_int(d) for d in a.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2_str("f4") + _int(0) + _int(1) + b"\x87R"
             + b"(" + _int(3) + _py2_str("<") + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb")
    state = b"(" + _int(1) + shape + dtype + b"\x89" + _py2_str(np.ascontiguousarray(a).astype("<f4").tobytes()) + b"t"
    return out + state + b"b"  # BUILD


def write_py2_numpy_pickle(path, arrays) -> None:
    body = b"".join(_py2_str(k) + _array(v) for k, v in arrays.items())
    with open(path, "wb") as f:
        f.write(b"\x80\x02}(" + body + b"u.")  # PROTO 2, EMPTY_DICT, MARK ... SETITEMS, STOP


def write_torchvision_r50(path, seed=0):
    """torchvision's ResNet-50 state dict (real names incl. fc and num_batches_tracked), randomly initialised."""
    torch.manual_seed(seed)
    state = resnet50(weights=None).state_dict()
    for name, value in state.items():  # as above: small gammas closing the residual branches, positive variances
        if name.endswith("bn3.weight"):
            value.uniform_(0.05, 0.15)
        elif name.endswith("running_var"):
            value.uniform_(0.5, 1.5)
    torch.save(state, path)
    return state
