"""The bundled example: real scikit-learn digits composited onto real scikit-image photos."""
