"""The stages of `make all`, one module each, in the order they run: inspection (inspect),
clean, plan, folds, augment, selection (select), tune, train, ensemble, submit, report; and
lr_find, package beside them. Each reads its inputs' files, writes its own in one transaction,
and imports no other stage: what two stages share sits in the library below them."""
