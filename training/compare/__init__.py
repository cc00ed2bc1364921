"""`digits compare`: an RBF SVM, an MLP and the shipped CNN, trained and measured in one run.

The modules, in the order the pipeline uses them:

- `config`: what a full run and a `--quick` run train on, and the search grids;
- `models`: the common classifier interface (predict, save, count parameters);
- `svm`, `mlp`, `cnn`: choose hyper-parameters on the validation part, then fit;
- `measure`: test accuracy, timings, size on disk, and the machine it ran on;
- `published`: error rates from the literature for the same model families;
- `plots` and `report`: the PNG figures and the Markdown report;
- `pipeline`: all of the above as one plain function, `run_comparison`.
"""
