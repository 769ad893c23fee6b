"""The label maps of the public CT collections, as their own files and papers define them.

Values are the collections' own; names are theirs too (medpeft's ontology resolves them, aliases
included). TotalSegmentator's order is its ``total_v1`` / ``total`` (v2) class map, which its
multilabel files use. The Fed-KiTS19 sites are FLamby's thresholded split: the six institutions
with at least ten of KiTS19's 210 labelled cases, the first 80% of each site's cases for training.
"""
from __future__ import annotations

FLARE22 = {0: "background", 1: "liver", 2: "right kidney", 3: "spleen", 4: "pancreas",
           5: "aorta", 6: "inferior vena cava", 7: "right adrenal gland", 8: "left adrenal gland",
           9: "gallbladder", 10: "esophagus", 11: "stomach", 12: "duodenum", 13: "left kidney"}

BTCV = {0: "background", 1: "spleen", 2: "right kidney", 3: "left kidney", 4: "gallbladder",
        5: "esophagus", 6: "liver", 7: "stomach", 8: "aorta", 9: "inferior vena cava",
        10: "portal vein and splenic vein", 11: "pancreas", 12: "right adrenal gland",
        13: "left adrenal gland"}

AMOS22 = {0: "background", 1: "spleen", 2: "right kidney", 3: "left kidney", 4: "gall bladder",
          5: "esophagus", 6: "liver", 7: "stomach", 8: "arota", 9: "postcava", 10: "pancreas",
          11: "right adrenal gland", 12: "left adrenal gland", 13: "duodenum", 14: "bladder",
          15: "prostate/uterus"}
AMOS_FIRST_MRI = 500  # AMOS case ids from 500 on are MRI scans

KITS19 = {0: "background", 1: "kidney", 2: "kidney_tumor"}
KITS19_LABELLED = 210  # case_00000 .. case_00209 have segmentations

_V1 = """spleen kidney_right kidney_left gallbladder liver stomach aorta inferior_vena_cava
portal_vein_and_splenic_vein pancreas adrenal_gland_right adrenal_gland_left lung_upper_lobe_left
lung_lower_lobe_left lung_upper_lobe_right lung_middle_lobe_right lung_lower_lobe_right
vertebrae_L5 vertebrae_L4 vertebrae_L3 vertebrae_L2 vertebrae_L1 vertebrae_T12 vertebrae_T11
vertebrae_T10 vertebrae_T9 vertebrae_T8 vertebrae_T7 vertebrae_T6 vertebrae_T5 vertebrae_T4
vertebrae_T3 vertebrae_T2 vertebrae_T1 vertebrae_C7 vertebrae_C6 vertebrae_C5 vertebrae_C4
vertebrae_C3 vertebrae_C2 vertebrae_C1 esophagus trachea heart_myocardium heart_atrium_left
heart_ventricle_left heart_atrium_right heart_ventricle_right pulmonary_artery brain
iliac_artery_left iliac_artery_right iliac_vena_left iliac_vena_right small_bowel duodenum colon
""" + " ".join(f"rib_{s}_{i}" for s in ("left", "right") for i in range(1, 13)) + """
humerus_left humerus_right scapula_left scapula_right clavicula_left clavicula_right femur_left
femur_right hip_left hip_right sacrum face gluteus_maximus_left gluteus_maximus_right
gluteus_medius_left gluteus_medius_right gluteus_minimus_left gluteus_minimus_right
autochthon_left autochthon_right iliopsoas_left iliopsoas_right urinary_bladder"""

_V2 = """spleen kidney_right kidney_left gallbladder liver stomach pancreas adrenal_gland_right
adrenal_gland_left lung_upper_lobe_left lung_lower_lobe_left lung_upper_lobe_right
lung_middle_lobe_right lung_lower_lobe_right esophagus trachea thyroid_gland small_bowel duodenum
colon urinary_bladder prostate kidney_cyst_left kidney_cyst_right sacrum vertebrae_S1
vertebrae_L5 vertebrae_L4 vertebrae_L3 vertebrae_L2 vertebrae_L1 vertebrae_T12 vertebrae_T11
vertebrae_T10 vertebrae_T9 vertebrae_T8 vertebrae_T7 vertebrae_T6 vertebrae_T5 vertebrae_T4
vertebrae_T3 vertebrae_T2 vertebrae_T1 vertebrae_C7 vertebrae_C6 vertebrae_C5 vertebrae_C4
vertebrae_C3 vertebrae_C2 vertebrae_C1 heart aorta pulmonary_vein brachiocephalic_trunk
subclavian_artery_right subclavian_artery_left common_carotid_artery_right
common_carotid_artery_left brachiocephalic_vein_left brachiocephalic_vein_right
atrial_appendage_left superior_vena_cava inferior_vena_cava portal_vein_and_splenic_vein
iliac_artery_left iliac_artery_right iliac_vena_left iliac_vena_right humerus_left humerus_right
scapula_left scapula_right clavicula_left clavicula_right femur_left femur_right hip_left
hip_right spinal_cord gluteus_maximus_left gluteus_maximus_right gluteus_medius_left
gluteus_medius_right gluteus_minimus_left gluteus_minimus_right autochthon_left autochthon_right
iliopsoas_left iliopsoas_right brain skull
""" + " ".join(f"rib_{s}_{i}" for s in ("left", "right") for i in range(1, 13)) + """
sternum costal_cartilages"""

TOTALSEG_V1 = {0: "background", **dict(enumerate(_V1.split(), start=1))}
TOTALSEG_V2 = {0: "background", **dict(enumerate(_V2.split(), start=1))}

# FLamby Fed-KiTS19 (thresholded_sites.csv): site -> KiTS19 case numbers, train cases first.
FED_KITS19_SITES: dict[int, tuple[list[int], list[int]]] = {
    0: ([21, 38, 55, 62, 74, 129, 164, 173, 175], [181, 195, 208]),
    1: ([0, 27, 51, 86, 101, 108, 116, 139, 141, 142, 155], [161, 165, 198]),
    2: ([3, 14, 33, 42, 98, 100, 102, 103, 120], [154, 156, 157]),
    3: ([53, 67, 70, 75, 78, 87, 113, 126, 135], [140, 159, 188]),
    4: ([11, 20, 39, 56, 69, 73, 77, 80, 119, 122, 136, 152], [153, 177, 184, 209]),
    5: ([1, 2, 5, 16, 22, 26, 30, 47, 49, 52, 59, 63, 68, 71, 76, 89, 91, 93, 96, 110, 114, 115,
         118, 132], [144, 146, 147, 148, 151, 158]),
}


def fed_kits19_site(case_number: int) -> tuple[str, str] | None:
    """(site, "train" | "test") of a KiTS19 case in the Fed-KiTS19 split, None if not in it."""
    for site, (train, test) in FED_KITS19_SITES.items():
        if case_number in train:
            return f"site-{site}", "train"
        if case_number in test:
            return f"site-{site}", "test"
    return None
