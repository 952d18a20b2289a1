// aethalloc-cli: the command-line front end. All logic lives in
// AethAllocToolCore so that the tests can reach it.
import AethAllocToolCore
import Foundation

exit(AethAllocTool.main(CommandLine.arguments))
