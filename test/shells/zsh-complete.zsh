# Drives zsh's real completion system on a command line and prints the candidates it offered,
# one a line: zsh -f zsh-complete.zsh FPATH_DIR OUT_FILE 'impermanencectl di'
# An interactive zsh runs in a pseudo-terminal (zpty) with compinit and FPATH_DIR first in
# $fpath; compadd is wrapped to append what it adds to OUT_FILE; the line is typed, then TAB.
zmodload zsh/zpty
fdir=$1 out=$2 line=$3
: > $out
zpty z zsh -f -i
zpty -w z "PS1='' PROMPT=''; fpath=($fdir \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z "compadd() { if [[ \${@[(I)-[OAD]*]} -gt 0 ]]; then builtin compadd \"\$@\"; return; fi; local -a __h; builtin compadd -A __h \"\$@\"; print -rl -- \$__h >> $out; builtin compadd \"\$@\"; }"
zpty -w z "zstyle ':completion:*' menu no; print READY"
zpty -r z r '*READY*'
zpty -w -n z "$line"$'\t'
# Until candidates came (at most 10 s), then a moment for the rest.
for i in {1..100}; do [[ -s $out ]] && break; sleep 0.1; done
sleep 0.3
zpty -d z
cat $out
