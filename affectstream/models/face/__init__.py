"""Face path: detection and tracking, the FER2013-trained CNN, its training, evaluation and bench."""
