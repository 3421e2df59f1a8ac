"""The lab's pages, listed once: the navigation (Home.py) and the Home page's guide both read this."""

#: (section, file, title, icon, what the page is for)
PAGES = [
    ("Lab", "views/home.py", "Home", ":material/home:", "check where the data comes from and train the full-precision baseline once"),
    ("Lab", "views/binarize.py", "Binarize (live)", ":material/tune:",
     "pick components and a method, drag the threshold: accuracy (or perplexity) and the exact size follow"),
    ("Lab", "views/train.py", "Train (QAT)", ":material/model_training:",
     "fine-tune the chosen configuration through the straight-through estimator, with distillation"),
    ("Lab", "views/sensitivity.py", "Sensitivity", ":material/grid_on:", "binarize one part at a time and see which costs most"),
    ("Lab", "views/landscape.py", "Loss landscape", ":material/landscape:", "the loss surface around the fp32 and the binarized weights"),
    ("Lab", "views/attention.py", "Attention", ":material/visibility:", "where each head looks, fp32 beside binarized"),
    ("Lab", "views/deploy.py", "Deploy", ":material/rocket_launch:", "write the model as a packed file, check its size, run it"),
    ("Lab", "views/compare.py", "Compare runs", ":material/compare_arrows:", "saved runs side by side, each with its interval"),
    ("Learn", "views/lessons.py", "Lessons", ":material/school:", "six guided lessons: predict, run the experiment, check"),
    ("Learn", "views/classroom.py", "Class", ":material/groups:",
     "the whole class live: everyone's pinned runs, the lesson predictions, the best so far (class mode)"),
    ("Reference", "views/results.py", "Results", ":material/table_chart:", "the committed tables, with their intervals"),
]
