"""GraspNet-1Billion open-set split (GraspNet-OS) of Openset RCNN / SemSeg (METHOD.md section 3.2).

88 categories with json ids 1..88 (= GraspNet object id + 1); 28 of them are known. Training keeps only the
known annotations; the test splits keep all of them and the evaluator treats the other 60 as unknown.
"""

GRASPNET_NUM_CATEGORIES = 88

# Known json category ids (ascending = the model's class index order).
GRASPNET_KNOWN_IDS = (
    1, 3, 6, 8, 9, 10, 12, 15, 18, 19, 21, 22, 23, 27, 28, 30, 31, 39, 42, 49, 52, 53, 59, 61, 62, 63, 64, 67,
)

# Their names in the authors' metadata, same order as GRASPNET_KNOWN_IDS.
GRASPNET_KNOWN_CLASSES = (
    "cracker_box", "tomato_soup_can", "banana", "mug", "power_drill", "scissors", "strawberry", "peach", "plum",
    "knife", "flat_screwdriver", "racquetball", "b_cups", "d_toy_airplane", "f_toy_airplane", "i_toy_airplane",
    "j_toy_airplane", "dabao_sod", "darlie_toothpaste", "camel", "large_elephant", "rhinocero", "darlie_box",
    "black_mouse", "dabao_facewash", "pantene", "head_shoulders_supreme", "head_shoulders_care",
)

GRASPNET_VIEWS_PER_SCENE = 256  # RealSense RGB views 0000..0255 of every scene
