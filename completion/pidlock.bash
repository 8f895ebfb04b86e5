# bash completion for pidlock(1): the subcommands, their options and option values, the lock
# file, and after FILE (and --) the command with its own completion.  -*- shell-script -*-
#
# Installed as /usr/share/bash-completion/completions/pidlock, where bash-completion loads it the
# first time `pidlock` is completed. Options come before FILE; everything after FILE is the
# command's.

# The index in COMP_WORDS of the word that starts where words[$1] starts. _init_completion joins
# what COMP_WORDBREAKS split (a URL's ':', an option's '='); _command_offset counts in COMP_WORDS.
_pidlock_comp_words_index() {
    local target=$1 pos=0 i start=-1
    for ((i = 0; i <= target && i < ${#words[@]}; i++)); do
        while [[ ${COMP_LINE:pos} != "${words[i]}"* ]] && ((pos < ${#COMP_LINE})); do ((pos++)); done
        ((i == target)) && start=$pos
        ((pos += ${#words[i]}))
    done
    pos=0
    for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
        while [[ ${COMP_LINE:pos} != "${COMP_WORDS[i]}"* ]] && ((pos < ${#COMP_LINE})); do ((pos++)); done
        if ((pos == start)); then
            echo "$i"
            return
        fi
        ((pos += ${#COMP_WORDS[i]}))
    done
    echo "$COMP_CWORD"
}

_pidlock() {
    local cur prev words cword split
    _init_completion -s -n : || return

    # The subcommand: the first word that is not a global option.
    local i sub="" subi=0
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            -*) ;;
            *)
                sub=${words[i]}
                subi=$i
                break
                ;;
        esac
    done
    if [[ -z $sub ]]; then
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W '--help --version' -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -W 'run status' -- "$cur")
        fi
        return
    fi

    local with_value without_value
    case $sub in
        run)
            with_value='-w --wait --timeout -E --conflict-exit-code --role --etcd --slots --ttl
                        --on-lease-loss'
            without_value='-n --nonblock -o --close --exec --no-mkdir --help'
            ;;
        status)
            with_value='--etcd --slots'
            without_value='--json --help'
            ;;
        *) return ;;
    esac
    with_value=" ${with_value//[[:space:]]/ } "

    # Options and their values, then FILE, then (for run) an optional -- and the command.
    local file=0 command=0
    for ((i = subi + 1; i < cword; i++)); do
        if ((file)); then
            [[ ${words[i]} == -- ]] && command=$((i + 1)) || command=$i
            break
        fi
        case ${words[i]} in
            --)
                command=$((i + 1))
                break
                ;;
            --*=*) ;;
            -*) [[ $with_value == *" ${words[i]} "* ]] && ((i++)) ;;
            *) file=$i ;;
        esac
    done

    if [[ $sub == run ]] && ((file && !command)); then
        # Right after FILE: the separator, or a command typed without it.
        if [[ -z $cur || $cur == - || $cur == -- ]]; then
            COMPREPLY=(--)
            return
        fi
        command=$cword
    fi
    if ((command)); then
        [[ $sub == run && $command -le $cword ]] || return
        _command_offset "$(_pidlock_comp_words_index "$command")"
        return
    fi
    ((file)) && return # status takes nothing after FILE

    if [[ $with_value == *" $prev "* ]]; then
        case $prev in
            --on-lease-loss) mapfile -t COMPREPLY < <(compgen -W 'terminate warn' -- "$cur") ;;
        esac
        return # seconds, codes, names, URLs: the user's
    fi
    [[ $split == true ]] && return

    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$with_value $without_value" -- "$cur")
        return
    fi
    _filedir
    __ltrim_colon_completions "$cur"
} &&
    complete -F _pidlock pidlock pidlock-fleet

# ex: filetype=sh
