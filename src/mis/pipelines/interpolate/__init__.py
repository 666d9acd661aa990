"""DSA frame interpolation: GaraMoSt."""
