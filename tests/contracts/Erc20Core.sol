// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice The ERC-20 state and transfers shared by the test tokens, without name and symbol
/// (TestToken answers them as strings, Bytes32SymbolToken as bytes32). Anyone may mint: these
/// tokens exist only on a test node.
/// @dev transferFrom lowers the allowance WITHOUT emitting Approval, as OpenZeppelin 5 does, so
/// the live allowance() differs from the value of the last Approval log. An allowance of
/// type(uint256).max is never lowered by transferFrom (an "unlimited" approval stays unlimited),
/// also as OpenZeppelin 5 does.
abstract contract Erc20Core {
    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    uint8 public immutable decimals;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) internal allowances;

    constructor(uint8 decimals_) {
        decimals = decimals_;
    }

    function allowance(address owner, address spender) public view virtual returns (uint256) {
        return allowances[owner][spender];
    }

    function mint(address to, uint256 amount) external {
        require(to != address(0), "mint to the zero address");
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        move(msg.sender, to, amount);
        return true;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        require(spender != address(0), "approve to the zero address");
        allowances[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowances[from][msg.sender];
        if (allowed != type(uint256).max) {
            require(allowed >= amount, "insufficient allowance");
            unchecked {
                allowances[from][msg.sender] = allowed - amount;
            }
        }
        move(from, to, amount);
        return true;
    }

    function move(address from, address to, uint256 amount) private {
        require(to != address(0), "transfer to the zero address");
        uint256 held = balanceOf[from];
        require(held >= amount, "insufficient balance");
        unchecked {
            balanceOf[from] = held - amount;
        }
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
    }
}
