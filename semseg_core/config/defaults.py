"""Every config key with its default, in one place.

Names follow detectron2 (`detectron2/config/defaults.py`) plus the SemSeg config extension. Defaults are the
values of the authors' SemSeg COCO model (METHOD.md), i.e. detectron2 defaults where SemSeg does not override
them. Keys marked **[ours]** do not exist in the authors' code; their default reproduces the authors' behaviour.
Keys marked **[tiny]** exist so the small CPU model can be configured; their default is the R50 value.

Sections are owned: MODEL by the model, INPUT/DATASETS/DATALOADER by data, SOLVER/TEST by the engine.
Add a key here (with a comment) before using it anywhere.
"""
from .cfg_node import CfgNode, ConfigError

# The 20 known (VOC) classes of SemSeg's COCO split, in row order = ascending COCO category id.
COCO_VOC_KNOWN_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "boat", "bird", "cat", "dog",
    "horse", "sheep", "cow", "bottle", "chair", "couch", "potted plant", "dining table", "tv",
)

_C = CfgNode()
_C.VERSION = 2  # detectron2 config format version; load_config refuses any other (check_config)

# ------------------------------------------------------------------------------------------------------------
# MODEL
# ------------------------------------------------------------------------------------------------------------
_C.MODEL = CfgNode()
_C.MODEL.DEVICE = "cuda"  # training/eval device ("cpu", "cuda", "cuda:N"); the Predictor takes its own
# Weights to start from: ours or the authors' detectron2 checkpoint (whole model), or an ImageNet backbone file:
# detectron2's R-50.pkl (caffe2 names; the authors' start) or torchvision's ResNet-50 state dict (README
# "faithful to the authors"). "" = random init, which training refuses for a frozen backbone (ALLOW_RANDOM_INIT).
_C.MODEL.WEIGHTS = ""
_C.MODEL.MASK_ON = True  # SemSeg predicts masks (detectron2 default False; Openset RCNN = SemSeg without masks)
# BGR pixel mean / std of the caffe-style MSRA weights (only the mean is subtracted).
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]
# [ours] Predictor only: weights (and so conv activations) in channels_last memory format. Same results up to
# float rounding; ~8% faster on CPU (oneDNN) in benchmarks/bench_model_inference.py. Faithful = False.
_C.MODEL.CHANNELS_LAST = False

_C.MODEL.BACKBONE = CfgNode()
# [ours] trunk: "resnet50_msra" (faithful: caffe convention, stride in the 1x1 conv, FrozenBN),
# "resnet18_torchvision" / "resnet50_torchvision" (stride in the 3x3 conv; for the tiny CPU model).
_C.MODEL.BACKBONE.NAME = "resnet50_msra"
_C.MODEL.BACKBONE.FREEZE_AT = 2  # 0 = train everything, 1 = freeze stem, 2 = stem + res2 (layer1), ...
# [ours] let training start without MODEL.WEIGHTS although the trunk has FrozenBN or frozen stages (they would stay
# at their random init / identity for the whole run). Only for tests and benchmarks; False refuses with a message.
_C.MODEL.BACKBONE.ALLOW_RANDOM_INIT = False

_C.MODEL.RESNETS = CfgNode()
# Norm layer of the trunk: "FrozenBN" (faithful) | "BN" (trainable, for training from scratch) | "GN" (32 groups)
_C.MODEL.RESNETS.NORM = "FrozenBN"

_C.MODEL.FPN = CfgNode()
_C.MODEL.FPN.OUT_CHANNELS = 256  # [tiny] channels of P2-P6 (64 in the tiny model)

_C.MODEL.ANCHOR_GENERATOR = CfgNode()
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]  # one size per level P2-P6
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[1.0]]  # SemSeg: one square anchor per location
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0  # anchor centre at (x*stride, y*stride)

_C.MODEL.PROPOSAL_GENERATOR = CfgNode()
_C.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 0.0  # drop proposals with width or height <= this (0: only empty boxes)

# Classification-free RPN (the authors' OLNRPN).
_C.MODEL.RPN = CfgNode()
_C.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
# detectron2 key (a legacy option there, off at -1): anchors crossing the image border by more than this are
# ignored in RPN training. Only -1 (keep every anchor, the authors' value) is implemented; check_config refuses others.
_C.MODEL.RPN.BOUNDARY_THRESH = -1
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]  # regression matcher: <0.3 negative, >=0.7 positive
_C.MODEL.RPN.IOU_LABELS = [0, -1, 1]
_C.MODEL.RPN.IOU_THRESHOLDS_OBJECTNESS = [0.1, 0.3]  # centerness matcher: <0.1 negative, >=0.3 positive
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256  # anchors sampled per image (both matchers); also the loss normaliser
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5  # regression sampling
_C.MODEL.RPN.CTR_POSITIVE_FRACTION = 1.0  # [ours] centerness sampling (hard-coded 1.0 in the authors' code)
_C.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 10.0  # IoU-loss weight (detectron2 default 1.0; SemSeg 10)
_C.MODEL.RPN.CTR_REG_LOSS_WEIGHT = 1.0  # centerness L1 loss weight
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000  # per-level top-k by centerness
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000  # used only with APPLY_NMS (dead in the authors' code)
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000  # used only with APPLY_NMS
_C.MODEL.RPN.NMS_THRESH = 1.0  # training NMS IoU, used only with APPLY_NMS (SemSeg yaml value 1.0)
_C.MODEL.RPN.NMS_THRESH_TEST = 0.7  # test NMS IoU, used only with APPLY_NMS
# [ours] apply NMS + post-NMS top-k to the proposals. The authors commented these lines out: faithful = False.
_C.MODEL.RPN.APPLY_NMS = False

_C.MODEL.ROI_HEADS = CfgNode()
# All dataset categories (known + unknown): the datasets check that their json has exactly this many (0 = no
# check, for a user's own dataset). The model itself sizes its heads with NUM_KNOWN_CLASSES.
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80
_C.MODEL.ROI_HEADS.NUM_KNOWN_CLASSES = 20  # K: prototypes and classifier rows (classifier has K+1 outputs)
_C.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]  # IoU >= 0.5 is foreground
_C.MODEL.ROI_HEADS.IOU_LABELS = [0, 1]
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512  # sampled ROIs per image; also the loss normaliser
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True
_C.MODEL.ROI_HEADS.OBJ_SCORE_THRESH_TEST = 0.05  # stage-2 keep s = sqrt(iou * ctr) > this
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 1.0  # stage-2 NMS (1.0 suppresses nothing; it only sorts)

_C.MODEL.ROI_BOX_HEAD = CfgNode()
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 2
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024  # [tiny] 256 in the tiny model
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0  # 0 = adaptive
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"  # aligned=True (torchvision's MultiScaleRoIAlign is not)
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = [10.0, 10.0, 5.0, 5.0]
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0  # 0 = plain L1
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 2.0  # SemSeg 2.0 (detectron2 default 1.0)
_C.MODEL.ROI_BOX_HEAD.IOU_REG_LOSS_WEIGHT = 1.0  # IoU branch L1 loss weight
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True

_C.MODEL.ROI_MASK_HEAD = CfgNode()
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 4  # the code's 4, not the paper figure's 3
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256  # [tiny] 64 in the tiny model; must equal MODEL.DML.EMD_DIM (kernel MLP input)
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"
_C.MODEL.ROI_MASK_HEAD.MASK_EMB_DIM = 128  # channels of the per-pixel embedding = dynamic 1x1 kernel length
_C.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = True
_C.MODEL.ROI_MASK_HEAD.LOSS_WEIGHT = 1.0  # [ours] detectron2's BaseMaskRCNNHead loss_weight (not a config key there)

# Class-semantics embedding + prototypes (the authors' DML / Openset RCNN's PLN).
_C.MODEL.DML = CfgNode()
_C.MODEL.DML.EMD_DIM = 256  # embedding width (unit sphere)
_C.MODEL.DML.REPS_PER_CLASS = 1  # prototypes per known class
_C.MODEL.DML.DISTANCE_TYPE = "COS"  # "COS" (1 - cosine) | "L1" | "L2"
_C.MODEL.DML.ALPHA = 0.05  # attraction margin
_C.MODEL.DML.BETA = 0.95  # repulsion margin (prototype separation margin = ALPHA + BETA)
_C.MODEL.DML.IOU_THRESHOLD = 0.5  # ROIs with IoU > this (strict) take part in the loss
_C.MODEL.DML.LOSS_WEIGHT = 2.0  # COCO 2.0, GraspNet 3.0
_C.MODEL.DML.UNK_THR = 0.085  # unknown if min distance to the prototypes > this

# Softmax classifier over the known classes (+ background) and the known/unknown post-processing.
_C.MODEL.SOFTMAXCLS = CfgNode()
_C.MODEL.SOFTMAXCLS.LOSS_WEIGHT = 1.0  # COCO 1.0, GraspNet 2.0
_C.MODEL.SOFTMAXCLS.KNOWN_SCORE_THRESH = 0.05
_C.MODEL.SOFTMAXCLS.KNOWN_NMS_THRESH = 0.5  # per-class NMS
_C.MODEL.SOFTMAXCLS.KNOWN_TOPK = 50  # known detections per image
_C.MODEL.SOFTMAXCLS.UNKNOWN_SCORE_THRESH = 0.05  # Openset RCNN uses 0.0
_C.MODEL.SOFTMAXCLS.UNKNOWN_NMS_THRESH = 0.5  # class-agnostic NMS
_C.MODEL.SOFTMAXCLS.UNKNOWN_TOPK = 50  # unknown detections per image

# ------------------------------------------------------------------------------------------------------------
# INPUT
# ------------------------------------------------------------------------------------------------------------
_C.INPUT = CfgNode()
_C.INPUT.MIN_SIZE_TRAIN = (640, 672, 704, 736, 768, 800)  # shorter side, chosen per image
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"  # "choice" | "range"
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 800  # 0 disables test-time resizing
_C.INPUT.MAX_SIZE_TEST = 1333
_C.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal" | "vertical" | "none" (p = 0.5)
_C.INPUT.FORMAT = "BGR"  # channel order the model expects ("BGR" | "RGB")
# Mask targets, detectron2's two paths: "polygon" (the authors': each polygon annotation is rasterised inside each
# proposal box at the mask head's size, PolygonMasks.crop_and_resize) | "bitmask" (full-image bitmaps cropped by
# aligned ROIAlign and thresholded at 0.5, BitMasks.crop_and_resize; needed for RLE annotations).
_C.INPUT.MASK_FORMAT = "polygon"
# [ours] Predictor input resize: "pil" (faithful: the uint8 image through PIL bilinear on the host, detectron2's
# ResizeShortestEdge) | "device" (bilinear on floats on the model's device, rounded to uint8: faster on a GPU,
# one grey level off on a few % of the pixels; BENCHMARKS.md "Input resize").
_C.INPUT.TEST_RESIZE = "pil"

# ------------------------------------------------------------------------------------------------------------
# DATASETS
# ------------------------------------------------------------------------------------------------------------
_C.DATASETS = CfgNode()
_C.DATASETS.TRAIN = ("coco_2017_train_invoc",)
_C.DATASETS.TEST = ("coco_2017_val",)
_C.DATASETS.ROOT = "./datasets"  # [ours] dataset root (the authors use $DETECTRON2_DATASETS, default ./datasets)
# [ours] known class names in row order (= ascending dataset category id); the authors hard-code these lists.
_C.DATASETS.KNOWN_CLASSES = COCO_VOC_KNOWN_CLASSES
# [ours] synthetic open-set scenes under ROOT/synthetic/{train,test}, generated on first use if missing/different
_C.DATASETS.SYNTHETIC = CfgNode()
_C.DATASETS.SYNTHETIC.TRAIN_IMAGES = 2000  # images in synthetic_train (known objects only)
_C.DATASETS.SYNTHETIC.TEST_IMAGES = 200  # images in synthetic_test
_C.DATASETS.SYNTHETIC.TRAIN_SEED = 0
_C.DATASETS.SYNTHETIC.TEST_SEED = 1  # another seed than training: held-out scenes
_C.DATASETS.SYNTHETIC.TEST_OPENNESS = 0.5  # expected share of unknown objects per test image
_C.DATASETS.SYNTHETIC.IMAGE_SIZE = 256  # square image side
_C.DATASETS.SYNTHETIC.KNOWN_FAMILIES = ("box", "disc", "triangle", "ring", "star", "cross")
_C.DATASETS.SYNTHETIC.UNKNOWN_FAMILIES = ("crescent", "l_shape", "arrow", "heart")  # test images only

# ------------------------------------------------------------------------------------------------------------
# DATALOADER
# ------------------------------------------------------------------------------------------------------------
_C.DATALOADER = CfgNode()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batches of landscape or of portrait images only (detectron2's)
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True  # drop training images without (known, non-crowd) annotations

# ------------------------------------------------------------------------------------------------------------
# SOLVER
# ------------------------------------------------------------------------------------------------------------
_C.SOLVER = CfgNode()
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
_C.SOLVER.IMS_PER_BATCH = 4  # total over all GPUs (detectron2 default 16; SemSeg 4)
_C.SOLVER.BASE_LR = 0.005
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 0.0001
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # weight decay of norm-layer parameters
_C.SOLVER.BIAS_LR_FACTOR = 1.0
_C.SOLVER.GAMMA = 0.1  # LR factor at each step
_C.SOLVER.STEPS = (84000, 116000)
_C.SOLVER.MAX_ITER = 128000
_C.SOLVER.WARMUP_FACTOR = 0.001
_C.SOLVER.WARMUP_ITERS = 400  # detectron2 default 1000; SemSeg 400
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" | "constant"
_C.SOLVER.CHECKPOINT_PERIOD = 10000
_C.SOLVER.AMP = CfgNode()
_C.SOLVER.AMP.ENABLED = False  # mixed precision training (detectron2 key; not used by the authors)
# [ours] "float16" (CUDA, with a gradient scaler; detectron2's) | "bfloat16" (CUDA or CPU, no scaler needed: on a
# CPU with AVX-512 BF16 a tiny-model step is ~1.3x faster, BENCHMARKS.md)
_C.SOLVER.AMP.DTYPE = "float16"
_C.SOLVER.CLIP_GRADIENTS = CfgNode()  # detectron2 keys; the authors train without clipping
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"  # "value" | "norm" | "full_model"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0

# ------------------------------------------------------------------------------------------------------------
# TEST
# ------------------------------------------------------------------------------------------------------------
_C.TEST = CfgNode()
_C.TEST.EVAL_PERIOD = 0  # iterations between evaluations; 0 = only at the end
_C.TEST.DETECTIONS_PER_IMAGE = 1000  # stage-2 cap before the known/unknown split (detectron2 default 100)
# [ours] inference speed switches, read by the Predictor (its compile= / amp= arguments override them):
_C.TEST.COMPILE = "auto"  # torch.compile backbone + FPN: "auto" (CUDA yes, CPU no) | "enabled" | "disabled" | "cudagraphs"
_C.TEST.AMP = ""  # CUDA autocast: "" (fp32, faithful) | "fp16" | "bf16"

# ------------------------------------------------------------------------------------------------------------
# misc
# ------------------------------------------------------------------------------------------------------------
_C.OUTPUT_DIR = "./output"
_C.SEED = -1  # global RNG seed (detectron2 key); < 0: draw a random seed and log it


def check_config(cfg: CfgNode) -> CfgNode:
    """Refuse values of detectron2 keys that this code does not implement (a key is read, never ignored)."""
    if int(cfg.VERSION) != 2:
        raise ConfigError(f"VERSION is {cfg.VERSION}: only detectron2 config format version 2 is read")
    if float(cfg.MODEL.RPN.BOUNDARY_THRESH) != -1:
        raise ConfigError(f"MODEL.RPN.BOUNDARY_THRESH is {cfg.MODEL.RPN.BOUNDARY_THRESH}: only -1 (keep anchors "
                          "crossing the image border, the authors' value) is implemented")
    if cfg.INPUT.MASK_FORMAT not in ("polygon", "bitmask"):
        raise ConfigError(f"INPUT.MASK_FORMAT must be 'polygon' or 'bitmask', got {cfg.INPUT.MASK_FORMAT!r}")
    if cfg.INPUT.TEST_RESIZE not in ("pil", "device"):
        raise ConfigError(f"INPUT.TEST_RESIZE must be 'pil' or 'device', got {cfg.INPUT.TEST_RESIZE!r}")
    if int(cfg.MODEL.ROI_HEADS.NUM_CLASSES) < 0:
        raise ConfigError(f"MODEL.ROI_HEADS.NUM_CLASSES must be >= 0, got {cfg.MODEL.ROI_HEADS.NUM_CLASSES}")
    return cfg


def get_cfg() -> CfgNode:
    """A fresh, mutable copy of all defaults."""
    return _C.clone()
