"""Sea-ice segmentation from SAR + multispectral GeoTIFFs: ViSual_IceD."""
