"""The offline web app (`edgeship deploy web`): the site builder, LiteRT.js vendoring, the app's
files (`app/`) and their precompressed copies."""
