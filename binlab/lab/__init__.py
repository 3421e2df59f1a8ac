"""What the app and the notebooks call: the live lab (:mod:`.live`), the lessons (:mod:`.lessons`),
teaching checks (:mod:`.teaching`) and the store of a learner's runs (:mod:`.runs`)."""
