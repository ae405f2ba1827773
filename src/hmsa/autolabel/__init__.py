"""Auto-labelling, as the paper does with Cityscapes' coarse images (README, *Auto-labelling*):
a teacher turns coarse images into dense labels. ``refinement`` thresholds its prediction and
combines it with the human coarse labels, ``calibration`` finds per-class thresholds on fine
labels, ``labelling`` writes the PNGs resumably across processes, ``quality`` measures them
against held-out truth, and ``figures`` draws them. Nothing here imports Kedro: the
auto_labeling pipeline's nodes only call these modules.
"""
