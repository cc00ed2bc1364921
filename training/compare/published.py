"""Published MNIST test error rates for the three model families, to set beside ours.

All rows are from the "Classifiers" table of LeCun, Cortes and Burges, "The MNIST database
of handwritten digits" (http://yann.lecun.com/exdb/mnist/), which names the original
paper of each entry. All were trained on the 60,000 training digits and tested on the
standard 10,000; "preprocessing" and the bracketed distortions are as the table gives them.
"""

from __future__ import annotations

SOURCE = ('Y. LeCun, C. Cortes, C. J. C. Burges, "The MNIST database of handwritten digits", '
          "table of classifiers, http://yann.lecun.com/exdb/mnist/")

# (family, entry as the table names it, preprocessing, test error %, original paper)
PUBLISHED: list[tuple[str, str, str, float, str]] = [
    ("SVM", "SVM, Gaussian kernel", "none", 1.4, "(no paper named in the table)"),
    ("SVM", "Virtual SVM, deg-9 poly, 2-pixel jittered", "deskewing", 0.56,
     "DeCoste and Schölkopf, Machine Learning 2002"),
    ("MLP", "2-layer NN, 800 HU, cross-entropy loss", "none", 1.6,
     "Simard et al., ICDAR 2003"),
    ("MLP", "3-layer NN, 500+300 HU, softmax, cross-entropy, weight decay", "none", 1.53,
     "Hinton, unpublished, 2005"),
    ("MLP", "2-layer NN, 800 HU, cross-entropy [elastic distortions]", "none", 0.7,
     "Simard et al., ICDAR 2003"),
    ("CNN", "Convolutional net LeNet-5 [no distortions]", "none", 0.95,
     "LeCun et al., Proc. IEEE 1998"),
    ("CNN", "Convolutional net LeNet-5 [distortions]", "none", 0.8,
     "LeCun et al., Proc. IEEE 1998"),
    ("CNN", "Committee of 35 conv. nets [elastic distortions]", "width normalization", 0.23,
     "Ciresan et al., CVPR 2012"),
]
