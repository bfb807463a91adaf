//! The CHAMELEON pipeline: select -> insight -> pairs -> capture -> fit -> profile.
