
#: a small CPU model: real trunk and heads, narrow channels, random weights (no ImageNet file
#: exists offline for this trunk; test_trunks covers loading the ones that do)
TINY = dict(trunk="mobilenetv3_large", output_stride=16, pretrained="none", aspp_channels=16, aspp_rates=(2, 4, 6),
            aspp_pooling=False, low_level_channels=8, decoder_channels=16, aux_channels=8, attn_channels=8)
